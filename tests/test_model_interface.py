"""Every registered model honours its interface (semcolor.models.interface), as timm's tests/test_models.py
runs every model: built at a tiny width it computes its losses, predicts at an odd size (37 x 53) and gives
that size back, survives a checkpoint round trip and a pyfunc (MLflow) round trip with identical outputs.

And nothing outside semcolor/models/ drives a model by its class or its family's name (an ast scan).
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from semcolor.models import MODEL_MODULES, create_model, list_models
from semcolor.models.interface import ColorizationModel, Segmenter
from semcolor.sources.base import IGNORE_INDEX

torch.set_num_threads(1)

NUM_CLASSES = 5
HEIGHT, WIDTH = 37, 53  # odd, prime-ish: no model's multiple divides either
# the tiniest config of every registered model: a new family adds its line here (the first test says so)
TINY: dict[str, dict] = {
    "sdc": {"width": 1 / 32, "num_classes": NUM_CLASSES},
    "gridnet": {"width": 1 / 16, "num_classes": NUM_CLASSES},
    "psc_plain": {"width": 0.0625, "num_classes": NUM_CLASSES, "generator_layers": 2, "generator_channels": 8,
                  "num_mixtures": 2},
    "psc_embed": {"width": 0.0625, "num_classes": NUM_CLASSES, "generator_layers": 2, "generator_channels": 8,
                  "num_mixtures": 2},
    "psc_full": {"width": 0.0625, "num_classes": NUM_CLASSES, "generator_layers": 2, "generator_channels": 8,
                 "num_mixtures": 2},
    "cls_plain": {"width": 0.0625, "num_classes": NUM_CLASSES},
    "cls_semantic": {"width": 0.0625, "num_classes": NUM_CLASSES},
    "cls_semantic_gan": {"width": 0.0625, "num_classes": NUM_CLASSES, "discriminator_width": 0.0625},
}
# configurations the registry defaults leave out but the interface must also hold for
EXTRA: dict[str, tuple[str, dict]] = {
    "sdc_gray_only": ("sdc", {**TINY["sdc"], "semantic_stream": False}),
    "gridnet_lab": ("gridnet", {**TINY["gridnet"], "input_mode": "lab"}),
    "cls_map_input": ("cls_semantic", {**TINY["cls_semantic"], "semantic": "input"}),
}
CASES = sorted(TINY) + sorted(EXTRA)


def build(case: str, seed: int = 0) -> tuple[str, dict, nn.Module]:
    name, config = EXTRA.get(case, (case, TINY.get(case)))
    torch.manual_seed(seed)
    return name, config, create_model(name, **config).eval()


def gray(count: int = 2, height: int = HEIGHT, width: int = WIDTH, seed: int = 1) -> torch.Tensor:
    """L in model units, (count, 1, height, width) in [-1, 1]."""
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(count, 1, height, width, generator=generator) * 2 - 1


def segmenter_for(model: nn.Module) -> nn.Module | None:
    """A tiny gray GridNet for a model that takes a map, else None."""
    if not (isinstance(model, ColorizationModel) and model.takes_map):
        return None
    torch.manual_seed(7)
    return create_model("gridnet", **TINY["gridnet"]).eval()


def predictions(model: nn.Module, L: torch.Tensor, segmenter: nn.Module | None) -> dict[str, torch.Tensor]:
    """Everything the interface offers for L, by name (deterministic outputs only)."""
    out: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        if isinstance(model, ColorizationModel):
            out["ab"] = model.predict_ab(L, segmenter=segmenter)
            own = model.predict_map(L)
            if own is not None:
                out["own_map"] = own
        if isinstance(model, Segmenter) and getattr(model, "num_classes", None) is not None:
            out["logits"] = model.predict_logits(L)
    return out


def test_every_registered_model_has_a_tiny_config_here():
    assert set(list_models()) == set(TINY), "add the new model's tiniest config to TINY (and to the README)"


@pytest.mark.parametrize("case", CASES)
def test_the_model_implements_an_interface_and_computes_its_losses(case):
    name, _, model = build(case)
    assert isinstance(model, (ColorizationModel, Segmenter)), f"{name} implements neither interface"
    assert model.size_multiple >= 1 and model.input_channels in (1, 3)
    generator = torch.Generator().manual_seed(2)
    height, width = 32, 64  # multiples of every tiny model's stride: the raw forward pass, as training runs it
    batch = {"L": torch.rand(2, 1, height, width, generator=generator) * 2 - 1,
             "ab": (torch.rand(2, 2, height, width, generator=generator) * 2 - 1) * 0.5,
             "seg": torch.randint(0, NUM_CLASSES, (2, height, width), generator=generator)}
    model.train()
    losses = model.compute_losses(batch)
    assert torch.isfinite(losses["loss"]) and losses["loss"].requires_grad


@pytest.mark.parametrize("case", CASES)
def test_predictions_at_an_odd_size_come_back_at_that_size(case):
    name, _, model = build(case)
    L = gray()
    segmenter = segmenter_for(model)
    with torch.no_grad():
        if isinstance(model, ColorizationModel):
            height, width = model.working_shape(150, 200)
            assert height % model.size_multiple == 0 and width % model.size_multiple == 0
            assert max(height, width) == pytest.approx(model.working_size, abs=model.size_multiple * 2)
            ab = model.predict_ab(L, segmenter=segmenter)
            assert ab.shape == (2, 2, HEIGHT, WIDTH) and ab.dtype == torch.float32
            assert torch.isfinite(ab).all() and ab.abs().max() <= 1.0 + 1e-6
            if model.takes_map:  # the map is an input: a different map must change the colors
                first = torch.zeros(2, HEIGHT, WIDTH, dtype=torch.long)
                given = model.predict_ab(L, first)
                assert given.shape == ab.shape
                assert not torch.equal(given, model.predict_ab(L, first + NUM_CLASSES - 1))
                unknown = torch.full((2, HEIGHT, WIDTH), IGNORE_INDEX, dtype=torch.long)
                assert model.predict_ab(L, unknown).shape == ab.shape
                assert model.num_classes == NUM_CLASSES
            own = model.predict_map(L)
            assert (own is not None) == model.predicts_map and not (model.takes_map and own is not None)
            if own is not None:
                assert own.shape == (2, HEIGHT, WIDTH) and int(own.max()) < NUM_CLASSES
            if not (model.takes_map or model.predicts_map):
                assert model.num_classes is None
            if model.can_sample:
                draws = model.sample_ab(L[:, :, :17, :21], seeds=[3, 4], k=2)
                assert draws.shape == (2, 2, 2, 17, 21) and torch.isfinite(draws).all()
                alone = model.sample_ab(L[1:, :, :17, :21], seeds=[4], k=2)  # image 1 alone: its own noise
                assert torch.equal(alone[0], draws[1])
            else:
                with pytest.raises(ValueError, match="does not sample"):
                    model.sample_ab(L, seeds=[0, 1])
        if isinstance(model, Segmenter) and model.num_classes is not None:
            ab = torch.zeros(2, 2, HEIGHT, WIDTH)
            logits = model.predict_logits(L, ab)
            assert logits.shape == (2, NUM_CLASSES, HEIGHT, WIDTH) and torch.isfinite(logits).all()
            assert torch.equal(model.predict_map(L, ab), logits.argmax(dim=1))


@pytest.mark.parametrize("case", CASES)
def test_the_accelerated_predictor_agrees_with_the_model(case):
    _, _, model = build(case)
    if not isinstance(model, ColorizationModel):
        pytest.skip("segmenters have no accelerated predictor")
    L = gray(count=1, height=64, width=96)
    segmenter = segmenter_for(model)
    fast = model.accelerated()
    assert isinstance(fast, ColorizationModel)
    with torch.no_grad():
        expected = model.predict_ab(L, segmenter=segmenter)
        got = fast.predict_ab(L, segmenter=segmenter)
    assert got.shape == expected.shape and torch.allclose(got, expected, atol=1e-4)


@pytest.mark.parametrize("case", CASES)
def test_a_checkpoint_round_trip_gives_identical_outputs(case, tmp_path):
    from semcolor.training.checkpoint import load_checkpoint, model_from_checkpoint, rng_state, save_checkpoint

    name, config, model = build(case, seed=3)
    path = save_checkpoint(tmp_path / f"{case}.pt", {
        "model_name": name, "model_config": dict(config), "model": model.state_dict(), "ema": None,
        "optimizer": {}, "step": 0, "rng": rng_state(), "extra": {}})
    loaded = model_from_checkpoint(load_checkpoint(path)).eval()
    assert type(loaded) is type(model)
    L, segmenter = gray(), segmenter_for(model)
    before, after = predictions(model, L, segmenter), predictions(loaded, L, segmenter)
    assert before and before.keys() == after.keys()
    for key in before:
        assert torch.equal(before[key], after[key]), key


@pytest.mark.parametrize("case", CASES)
def test_a_pyfunc_round_trip_gives_identical_outputs(case, tmp_path):
    """Saved as the MLflow pyfunc the train stage logs (models from code, the checkpoint as artifact, a
    GridNet bundled for a model that takes a map), loaded back: predict equals the model's own."""
    import mlflow.pyfunc

    from semcolor.mlflow_model import CHECKPOINT_ARTIFACT, MODEL_CODE, SEGMENTER_ARTIFACT
    from semcolor.training.checkpoint import rng_state, save_checkpoint

    name, config, model = build(case, seed=5)

    def saved(path: Path, model_name: str, model_config: dict, module: nn.Module) -> str:
        return str(save_checkpoint(path, {
            "model_name": model_name, "model_config": dict(model_config), "model": module.state_dict(),
            "ema": None, "optimizer": {}, "step": 0, "rng": rng_state(), "extra": {}}))

    artifacts = {CHECKPOINT_ARTIFACT: saved(tmp_path / "model.pt", name, config, model)}
    segmenter = segmenter_for(model)
    if segmenter is not None:
        artifacts[SEGMENTER_ARTIFACT] = saved(tmp_path / "segmenter.pt", "gridnet", TINY["gridnet"], segmenter)
    mlflow.pyfunc.save_model(tmp_path / "pyfunc", python_model=str(MODEL_CODE), artifacts=artifacts,
                             pip_requirements=[])  # no environment inference: the test is offline
    loaded = mlflow.pyfunc.load_model(str(tmp_path / "pyfunc"))
    L = gray()
    if isinstance(model, ColorizationModel):
        inputs, expected = L, predictions(model, L, segmenter)["ab"]
    else:
        ab = torch.rand(2, 2, HEIGHT, WIDTH) * 0.5 if model.input_channels == 3 else None
        inputs = L if ab is None else torch.cat([L, ab], dim=1)
        with torch.no_grad():
            expected = model.predict_map(L, ab)
    got = loaded.predict(inputs.numpy())
    assert got.shape == tuple(expected.shape)
    np.testing.assert_array_equal(got, expected.numpy())


def test_a_protocol_violation_is_caught(monkeypatch):
    """The checks above fail on a family whose predict_ab forgets to crop its padding."""
    _, _, model = build("sdc")
    original = type(model).predict_ab

    def uncropped(self, L, semantic_map=None, segmenter=None):
        from semcolor.models.interface import pad_to_multiple

        return original(self, pad_to_multiple(L, 32, min_size=64),
                        None if semantic_map is None else pad_to_multiple(semantic_map, 32, min_size=64), segmenter)

    monkeypatch.setattr(type(model), "predict_ab", uncropped)
    with pytest.raises(AssertionError):
        test_predictions_at_an_odd_size_come_back_at_that_size("sdc")


# ------------------------------------------------------------------------------ no family branches outside


ROOT = Path(__file__).resolve().parents[1]
# names of families and registered models that code outside semcolor/models/ must not compare against
FAMILY_STRINGS = {"sdc", "psc", "cls", "gridnet", "segmenter", "generic"}
# record readers that look figures up by model name, not drive a model: the paper's claims name the models
# they are about (claim e compares psc_full with psc_plain; a psc_* headline is over the sampled images)
ALLOWED = {("semcolor/claims.py", "psc_")}


def model_class_names() -> set[str]:
    import importlib

    names = set()
    for module_name in MODEL_MODULES:
        module = importlib.import_module(module_name)
        for value in vars(module).values():
            if inspect.isclass(value) and issubclass(value, nn.Module) and value.__module__ == module_name:
                names.add(value.__name__)
    return names


def family_branches(tree: ast.AST, classes: set[str]) -> list[tuple[int, str]]:
    """(line, what) for every isinstance/issubclass naming a model class, and every comparison or
    startswith/endswith/partition-test against a family or registered-model name."""
    registered = set(list_models())

    def names_in(node: ast.AST) -> set[str]:
        return {n.id if isinstance(n, ast.Name) else n.attr for n in ast.walk(node)
                if isinstance(n, (ast.Name, ast.Attribute))}

    def family_string(node: ast.AST) -> str | None:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value
            if text in FAMILY_STRINGS or text in registered or text.rstrip("_") in FAMILY_STRINGS:
                return text
        return None

    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("isinstance",
                                                                                                   "issubclass"):
            hit = names_in(node.args[1]) & classes if len(node.args) == 2 else set()
            if hit:
                found.append((node.lineno, f"{node.func.id}(..., {', '.join(sorted(hit))})"))
        if isinstance(node, ast.Compare):
            for side in [node.left, *node.comparators]:
                constants = [side] + (list(side.elts) if isinstance(side, (ast.Tuple, ast.Set, ast.List)) else [])
                for constant in constants:
                    text = family_string(constant)
                    if text is not None:
                        found.append((node.lineno, f"comparison with {text!r}"))
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("startswith", "endswith") and node.args):
            text = family_string(node.args[0])
            if text is not None:
                found.append((node.lineno, f".{node.func.attr}({text!r})"))
    return found


def test_the_scan_finds_family_branches():
    classes = model_class_names()
    assert {"SemanticDrivenUNet", "GridNet", "PixelatedSemanticColorization", "QuantizedColorizer"} <= classes
    source = ("if isinstance(model, SemanticDrivenUNet): pass\n"
              "if isinstance(m, (nn.Conv2d, psc.PixelatedSemanticColorization)): pass\n"
              "if family == 'sdc': pass\n"
              "if name.startswith('psc_'): pass\n"
              "if kind in ('gridnet', 'x'): pass\n"
              "if isinstance(model, ColorizationModel) and name == 'model': pass\n")
    found = family_branches(ast.parse(source), classes)
    assert [line for line, _ in found] == [1, 2, 3, 4, 5]


def test_no_model_class_or_family_name_branches_outside_semcolor_models():
    classes = model_class_names()
    offenders = []
    for path in sorted([*ROOT.joinpath("semcolor").rglob("*.py"), *ROOT.joinpath("pipeline").rglob("*.py")]):
        relative = path.relative_to(ROOT).as_posix()
        if relative.startswith("semcolor/models/"):
            continue
        for line, what in family_branches(ast.parse(path.read_text(), filename=relative), classes):
            if not any(relative == file and token in what for file, token in ALLOWED):
                offenders.append(f"{relative}:{line}: {what}")
    assert not offenders, "drive models through semcolor.models.interface instead:\n" + "\n".join(offenders)


def test_mlflow_model_does_not_import_inference():
    """The pyfunc calls the model's interface: importing it pulls in no inference module (no cycle)."""
    import subprocess
    import sys

    code = ("import sys, semcolor.mlflow_model; "
            "sys.exit(1 if 'semcolor.inference' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0
    tree = ast.parse((ROOT / "semcolor/mlflow_model.py").read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert "semcolor.inference" not in imported
