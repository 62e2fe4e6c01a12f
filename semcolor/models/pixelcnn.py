"""The conditional gated PixelCNN (generator g of ``semcolor.models.psc``): its layers and its two samplers.

``GatedPixelCNNLayer`` and ``ConditionalGatedPixelCNN`` are the network; ``sample_naive`` and
``sample_cached`` draw from it autoregressively. They live in one module because the cached sampler
re-implements a layer's arithmetic on cached slices (it reads the layers' weights and padding directly):
the two must change together.

Both samplers visit the a/b pixels in raster order, turn the generator's output at the pixel into mixture
parameters and call ``mixture.sample`` on exactly the same ``(B, P)`` tensor shapes in exactly the same
order, so with generators seeded alike they draw the same random numbers and (up to floating-point
rounding of the network, far below the 1/127.5 grid step the samples are snapped to) the same samples.
Instead of a generator they can take ``noise`` ``(B, K + 2, h, w)``, every pixel's uniform numbers drawn
beforehand (``PixelatedSemanticColorization.sample`` draws them per image from that image's seed, so an
image's samples do not depend on which other images share its batch).

* ``sample_naive``: a full forward pass of g over the whole image for every pixel: ``h * w`` passes.
* ``sample_cached``: the fast-generation idea of Ramachandran et al. (2017): every layer keeps a cache
  (queue) of the activations it has already produced, and each step computes only what the new pixel
  changes. Because both stacks of ``GatedPixelCNNLayer`` are strictly causal, the vertical stack of row i
  depends only on rows < i: it is computed once per row, for all layers, from the last ``r + 1`` cached
  rows of each layer's input. Within the row, each pixel needs only the horizontal stack at that one
  position: a ``1 x (r + 1)`` window of the layer's cached horizontal inputs, the row's precomputed
  vertical link and conditioning, a gate and a 1x1 projection - a few small matrix products per layer.
  Cost per image: ``h`` row convolutions plus ``h * w`` single-position steps, instead of ``h * w`` passes.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from semcolor.models import mixture
from semcolor.models.weight_norm import wn_conv2d

# ----------------------------------------------------------------------------------------------------- layers


def down_shift(x: torch.Tensor) -> torch.Tensor:
    """Move every row one down (zeros in row 0): position (i, j) then holds row i - 1."""
    return F.pad(x, (0, 0, 1, 0))[:, :, :-1, :]


def right_shift(x: torch.Tensor) -> torch.Tensor:
    """Move every column one right (zeros in column 0): position (i, j) then holds column j - 1."""
    return F.pad(x, (1, 0, 0, 0))[:, :, :, :-1]


class GatedPixelCNNLayer(nn.Module):
    """One layer of the gated PixelCNN (van den Oord et al. 2016), vertical and horizontal stacks.

    Both stacks are kept *strictly causal*: the vertical stack at (i, j) sees only rows < i, the horizontal
    stack only rows < i plus row i left of j. The first layer gets that by shifting the a/b image (down for
    the vertical stack, right for the horizontal one: mask A); later layers use kernels that include their
    own position (mask B): vertical ``(r + 1) x (2r + 1)`` over rows i - r..i, horizontal ``1 x (r + 1)`` over
    columns j - r..j. The 1x1 link from vertical to horizontal at the same position closes the blind spot.
    Convolutions carry no padding: ``forward`` pads, so the cached sampler can run them on slices.
    """

    def __init__(self, in_channels: int, channels: int, cond_channels: int, kernel: int, first: bool):
        super().__init__()
        self.radius = kernel // 2
        self.first = first
        r = self.radius
        self.conv_vertical = wn_conv2d(in_channels, 2 * channels, (r + 1, 2 * r + 1))
        self.conv_horizontal = wn_conv2d(in_channels, 2 * channels, (1, r + 1))
        self.link = wn_conv2d(2 * channels, 2 * channels, 1)
        self.condition = wn_conv2d(cond_channels, 4 * channels, 1)  # (vertical, horizontal) gate biases
        # a residual branch (every layer but the first) starts small, as the trunk's residual blocks
        self.out = wn_conv2d(channels, channels, 1, init_scale=1.0 if first else 0.1)

    def pad_vertical(self, v: torch.Tensor) -> torch.Tensor:
        r = self.radius
        return F.pad(v, (r, r, r, 0))

    def pad_horizontal(self, h: torch.Tensor) -> torch.Tensor:
        return F.pad(h, (self.radius, 0, 0, 0))

    @staticmethod
    def gate(pre: torch.Tensor) -> torch.Tensor:
        u, g = pre.chunk(2, dim=1)
        return torch.tanh(u) * torch.sigmoid(g)

    def forward(
        self, v: torch.Tensor, h: torch.Tensor, cond: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        cond_v, cond_h = self.condition(cond).chunk(2, dim=1)
        v_pre = self.conv_vertical(self.pad_vertical(v)) + cond_v
        h_pre = self.conv_horizontal(self.pad_horizontal(h)) + self.link(v_pre) + cond_h
        h_out = self.out(self.gate(h_pre))
        if not self.first:  # the first layer's input is the (shifted) image itself: no residual
            h_out = h_out + h
        return self.gate(v_pre), h_out


class ConditionalGatedPixelCNN(nn.Module):
    """g: params of the (a, b) mixture at every pixel of the 1/4-resolution image, given earlier pixels.

    ``forward(ab, cond)``: ab ``(N, 2, h, w)`` in [-1, 1]; cond ``(N, cond_channels, h, w)``.
    Returns ``(N, P, h, w)`` mixture parameters for pixel (i, j) that depend on ab only at pixels before
    (i, j) in raster order. A constant ones channel is appended to ab so zero padding is distinguishable
    from a gray (a = b = 0) pixel.
    """

    def __init__(
        self,
        cond_channels: int,
        channels: int,
        num_layers: int,
        kernel: int,
        num_mixtures: int,
        condition_on_L: bool,
    ):
        super().__init__()
        self.channels = channels
        self.layers = nn.ModuleList(
            GatedPixelCNNLayer(
                3 if i == 0 else channels, channels, cond_channels, kernel, first=i == 0
            )
            for i in range(num_layers)
        )
        self.head_hidden = wn_conv2d(channels, channels, 1)
        num_params = mixture.num_mixture_params(num_mixtures, condition_on_L)
        self.head_out = wn_conv2d(channels, num_params, 1, init_scale=0.1)

    @staticmethod
    def with_ones(ab: torch.Tensor) -> torch.Tensor:
        return torch.cat([ab, torch.ones_like(ab[:, :1])], dim=1)

    def head(self, h: torch.Tensor) -> torch.Tensor:
        return self.head_out(F.elu(self.head_hidden(F.elu(h))))

    def forward(self, ab: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        x = self.with_ones(ab)
        v, h = down_shift(x), right_shift(x)
        for layer in self.layers:
            v, h = layer(v, h, cond)
        return self.head(h)


# --------------------------------------------------------------------------------------------------- samplers


def _pixel_noise(noise: torch.Tensor | None, cond: torch.Tensor, num_mixtures: int) -> list | None:
    """Per-pixel views ``[i][j] -> (B, K + 2)`` of pre-drawn noise, cast once to the network's dtype."""
    if noise is None:
        return None
    batch, _, height, width = cond.shape
    if tuple(noise.shape) != (batch, num_mixtures + 2, height, width):
        raise ValueError(
            f"noise must have shape {(batch, num_mixtures + 2, height, width)}, got {tuple(noise.shape)}"
        )
    noise = noise.to(device=cond.device, dtype=cond.dtype).permute(2, 3, 0, 1).contiguous()
    return [[noise[i, j] for j in range(width)] for i in range(height)]


def _pixel_L(L_quarter: torch.Tensor | None, i: int, j: int) -> torch.Tensor | None:
    return None if L_quarter is None else L_quarter[:, :, i, j]


def sample_naive(
    net: ConditionalGatedPixelCNN,
    cond: torch.Tensor,
    num_mixtures: int,
    condition_on_L: bool,
    L_quarter: torch.Tensor | None = None,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    progress: bool = False,
    max_pixels: int | None = None,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """One full pass of ``net`` per pixel. cond ``(B, C, h, w)``; L_quarter ``(B, 1, h, w)`` in [-1, 1]
    when the mixture is coupled to L. Returns a/b ``(B, 2, h, w)`` in [-1, 1] on the 8-bit grid.

    ``max_pixels`` stops after that many pixels in raster order (the rest stay 0): every naive step costs
    the same full pass, so benchmarks time a prefix and scale it when the whole image would take too long.
    """
    batch, _, height, width = cond.shape
    ab = cond.new_zeros(batch, 2, height, width)
    pixel_noise = _pixel_noise(noise, cond, num_mixtures)
    total = height * width if max_pixels is None else min(max_pixels, height * width)
    with torch.no_grad():
        for i in tqdm(range(height), desc="naive sampling rows", disable=not progress):
            for j in range(width):
                if i * width + j >= total:
                    return ab
                params = net(ab, cond)[:, :, i, j]
                ab[:, :, i, j] = mixture.sample(
                    params, num_mixtures, condition_on_L, _pixel_L(L_quarter, i, j), temperature, generator,
                    uniform=None if pixel_noise is None else pixel_noise[i][j],
                )
    return ab


class _LayerCache:
    """One layer's cached inputs, as views made once so the per-pixel loop does no tensor indexing.

    vertical_inputs ``(B, C_in, h + r, w + 2r)``: the layer's vertical-stack input, zero-padded exactly as
    ``GatedPixelCNNLayer.pad_vertical`` pads it (row i of the input lives at row i + r).
    horizontal_inputs ``(B, (w + r) * C_in)``: the current row of the horizontal-stack input, flattened
    channel-last (column j at offset ``(j + r) * C_in``), so the ``1 x (r + 1)`` window of column j is one
    strided 2-D view that a matrix product reads in place. Every slot is written in the row before it is
    read (and the r padding slots stay zero), so the buffer never needs clearing between rows.
    """

    def __init__(self, layer: GatedPixelCNNLayer, cond: torch.Tensor, in_channels: int):
        batch, _, height, width = cond.shape
        r = layer.radius
        self.layer = layer
        self.radius = r
        self.residual = not layer.first  # the first layer's input is the image itself: no residual
        self.vertical_inputs = cond.new_zeros(batch, in_channels, height + r, width + 2 * r)
        self.horizontal_inputs = cond.new_zeros(batch, (width + r) * in_channels)
        buffer, c = self.horizontal_inputs, in_channels
        self.windows = [buffer.narrow(1, j * c, (r + 1) * c) for j in range(width)]  # columns j - r..j
        self.slots = [buffer.narrow(1, (j + r) * c, c) for j in range(width)]  # column j
        self.cond_vertical, self.cond_horizontal = layer.condition(cond).chunk(2, dim=1)
        # conv_horizontal weight (2C, C_in, 1, r + 1) -> (r + 1) * C_in rows ordered (tap, channel), matching
        # the flattened channel-last window
        weight = layer.conv_horizontal.weight
        self.horizontal_weight = weight[:, :, 0, :].permute(2, 1, 0).reshape(-1, weight.shape[0]).contiguous()
        self.channels = layer.out.weight.shape[0]
        self.out_weight_t = layer.out.weight[:, :, 0, 0].t()
        self.out_bias = layer.out.bias
        self.row_bias: tuple[torch.Tensor, ...] = ()  # per column (B, 2C): link + conditioning + conv bias

    def start_row(self, i: int) -> torch.Tensor:
        """Vertical stack at row i from cached input rows i - r..i; returns the gated row (B, C, 1, w)."""
        layer = self.layer
        rows = self.vertical_inputs[:, :, i : i + self.radius + 1, :]
        v_pre = layer.conv_vertical(rows) + self.cond_vertical[:, :, i : i + 1, :]
        row_bias = layer.link(v_pre) + self.cond_horizontal[:, :, i : i + 1, :]
        row_bias = row_bias[:, :, 0, :] + layer.conv_horizontal.bias[None, :, None]
        self.row_bias = row_bias.permute(0, 2, 1).contiguous().unbind(1)
        return layer.gate(v_pre)

    def step(self, j: int, out: torch.Tensor) -> torch.Tensor:
        """Horizontal stack at column j of the current row, written into ``out`` ``(B, C)``.

        Same arithmetic as ``GatedPixelCNNLayer.forward`` at one position, in fewer tensor operations:
        the gate ``tanh(u) * sigmoid(g)`` is ``glu([tanh(u), g])``.
        """
        h_pre = torch.addmm(self.row_bias[j], self.windows[j], self.horizontal_weight)
        h_pre[:, : self.channels].tanh_()
        torch.addmm(self.out_bias, F.glu(h_pre, dim=1), self.out_weight_t, out=out)
        if self.residual:
            out.add_(self.slots[j])
        return out


def sample_cached(
    net: ConditionalGatedPixelCNN,
    cond: torch.Tensor,
    num_mixtures: int,
    condition_on_L: bool,
    L_quarter: torch.Tensor | None = None,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    progress: bool = False,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """Incremental sampling with per-layer activation caches; same arguments/result as ``sample_naive``."""
    batch, _, height, width = cond.shape
    ab = cond.new_zeros(batch, 2, height, width)
    pixel_noise = _pixel_noise(noise, cond, num_mixtures)
    with torch.no_grad():
        caches = []
        in_channels = 3  # a, b and the constant ones channel (ConditionalGatedPixelCNN.with_ones)
        for layer in net.layers:
            caches.append(_LayerCache(layer, cond, in_channels))
            in_channels = net.channels
        first, r0 = caches[0], caches[0].radius
        # the first layer's horizontal input is the right-shifted image: column j + 1 holds pixel j, and
        # the ones channel is 1 everywhere but column 0 (zero padding of the shift)
        for j in range(1, width):
            first.slots[j][:, 2] = 1.0
        first_ab_slots = [first.slots[j + 1].narrow(1, 0, 2) for j in range(width - 1)]
        links = list(zip(caches[:-1], caches[1:]))
        last_output = cond.new_empty(batch, net.channels)
        head_hidden_weight, head_hidden_bias = net.head_hidden.weight[:, :, 0, 0], net.head_hidden.bias
        head_out_weight, head_out_bias = net.head_out.weight[:, :, 0, 0], net.head_out.bias
        for i in tqdm(range(height), desc="cached sampling rows", disable=not progress):
            # the first layer's vertical input is the down-shifted image: its row i holds image row i - 1
            if i > 0:
                previous = net.with_ones(ab[:, :, i - 1 : i, :])
                first.vertical_inputs[:, :, i + r0, r0 : r0 + width] = previous[:, :, 0, :]
            for cache, nxt in links:
                v_row = cache.start_row(i)
                r = nxt.radius
                nxt.vertical_inputs[:, :, i + r, r : r + width] = v_row[:, :, 0, :]
            caches[-1].start_row(i)
            row = []
            for j in range(width):
                for cache, nxt in links:
                    cache.step(j, out=nxt.slots[j])
                h = caches[-1].step(j, out=last_output)
                hidden = F.linear(F.elu(h), head_hidden_weight, head_hidden_bias)
                params = F.linear(F.elu(hidden), head_out_weight, head_out_bias)
                pixel = mixture.sample(
                    params, num_mixtures, condition_on_L, _pixel_L(L_quarter, i, j), temperature, generator,
                    uniform=None if pixel_noise is None else pixel_noise[i][j],
                )
                row.append(pixel)
                if j + 1 < width:
                    first_ab_slots[j].copy_(pixel)
            ab[:, :, i, :] = torch.stack(row, dim=-1)
    return ab
