"""semcolor.registry against the default SQLite store: aliases, promotion with its record, rollback, and
loading ``models:/<name>@champion`` for colorization and evaluation."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch

from semcolor import model_reference, registry
from semcolor.registry import CHALLENGER, CHAMPION, get_by_alias, promote, rollback, set_alias
from tests.mlflow_store import (  # noqa: F401  (fixtures)
    PSC_CONFIG,
    copy_store,
    log_training_run,
    migrated_mlflow_db,
    tracking_store,
)

pytestmark = pytest.mark.slow
NAME = "semcolor-psc-plain"


@pytest.fixture(scope="module")
def populated(tmp_path_factory: pytest.TempPathFactory, migrated_mlflow_db: Path) -> dict:
    """A store (never written after this) where two psc-plain training runs registered versions 1 and 2."""
    folder = tmp_path_factory.mktemp("registry_store")
    uri = copy_store(migrated_mlflow_db, folder / "store")
    with tracking_store(uri, folder):
        first = log_training_run(folder, "psc", "plain", "synthetic", "psc_plain", PSC_CONFIG, seed=0)
        second = log_training_run(folder, "psc", "plain", "synthetic", "psc_plain", PSC_CONFIG, seed=1)
    assert (first.version, second.version) == ("1", "2")
    return {"database": folder / "store" / "mlflow.db", "runs": (first, second)}


@pytest.fixture
def store(populated: dict, tmp_path: Path):
    """A copy of the populated store for one test (aliases are writes), as MLflow's current store."""
    with tracking_store(copy_store(populated["database"], tmp_path / "store"), tmp_path):
        yield populated["runs"]


def client():
    from mlflow import MlflowClient

    return MlflowClient()


def test_promotion_moves_the_alias_and_records_the_previous_version(store) -> None:
    assert get_by_alias(NAME, CHAMPION) is None
    first = promote(NAME, 1)
    assert (first.version, first.previous, first.moved) == ("1", None, True)
    assert first.uri == f"models:/{NAME}@champion"
    assert client().get_model_version(NAME, "1").tags["semcolor.previous_champion"] == "none"

    second = promote(NAME, "2")
    assert (second.version, second.previous) == ("2", "1")
    assert str(get_by_alias(NAME, CHAMPION).version) == "2"
    assert str(get_by_alias(NAME, "previous_champion").version) == "1"
    assert client().get_model_version(NAME, "2").tags["semcolor.previous_champion"] == "1"

    again = promote(NAME, 2)
    assert not again.moved and again.previous == "2"
    assert str(get_by_alias(NAME, "previous_champion").version) == "1"  # a no-op promotion keeps the record


def test_rollback_returns_to_the_previous_champion(store) -> None:
    with pytest.raises(LookupError, match="nothing to roll back to"):
        rollback(NAME)
    promote(NAME, 1)
    promote(NAME, 2)
    back = rollback(NAME)
    assert (back.version, back.previous) == ("1", "2")
    assert str(get_by_alias(NAME, CHAMPION).version) == "1"
    assert rollback(NAME).version == "2"  # rolling back the rollback


def test_challenger_and_champion_are_independent(store) -> None:
    promote(NAME, 1)
    version = set_alias(NAME, CHALLENGER, 2)
    assert str(version.version) == "2" and version.run_id == store[1].run_id
    assert str(get_by_alias(NAME, CHAMPION).version) == "1"
    assert str(get_by_alias(NAME, CHALLENGER).version) == "2"
    assert set(client().get_registered_model(NAME).aliases) == {CHAMPION, CHALLENGER}


def test_unknown_model_or_version_is_a_clear_error(store) -> None:
    with pytest.raises(LookupError, match=r"no registered model 'semcolor-psc-nope'.*did you mean "
                       r"semcolor-psc-plain\? registered: semcolor-psc-plain$"):
        promote("semcolor-psc-nope", 1)
    with pytest.raises(LookupError, match=r"has no version 3; it has \['1', '2'\]"):
        promote(NAME, 3)
    with pytest.raises(LookupError, match="no registered model"):
        get_by_alias("semcolor-psc-nope", CHAMPION)
    assert get_by_alias(NAME, CHAMPION) is None  # nothing moved


def test_champion_loads_for_colorization_and_evaluation(store) -> None:
    from semcolor.inference import load_colorizer, predict_ab
    from semcolor.training.checkpoint import load_checkpoint

    promote(NAME, 2)
    expected = store[1].checkpoint
    assert model_reference.checkpoint_for(NAME).read_bytes() == expected.read_bytes()
    model = model_reference.load_model(NAME)
    weights = load_checkpoint(expected)["model"]
    assert all(torch.equal(value, weights[key]) for key, value in model.state_dict().items())
    colorizer = load_colorizer(registry.model_uri(NAME))  # what `semcolor colorize --model` does
    L_unit = torch.linspace(-1, 1, 32 * 32).reshape(1, 1, 32, 32)
    assert torch.equal(predict_ab(colorizer.model, L_unit), predict_ab(model, L_unit))


def run_cli(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="semcolor")
    registry.add_promote_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    status = args.handler(args)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_promote_command(store, capsys: pytest.CaptureFixture) -> None:
    assert run_cli(["promote", NAME, "--version", "1"], capsys)[:2] == (
        0, f"models:/{NAME}@champion -> version 1 (was unset)\n")
    assert run_cli(["promote", NAME, "--version", "2"], capsys)[:2] == (
        0, f"models:/{NAME}@champion -> version 2 (was version 1)\n")
    assert run_cli(["promote", NAME, "--version", "2"], capsys)[:2] == (
        0, f"models:/{NAME}@champion already points at version 2\n")
    assert run_cli(["promote", NAME, "--rollback"], capsys)[:2] == (
        0, f"models:/{NAME}@champion -> version 1 (was version 2)\n")
    status, _, err = run_cli(["promote", NAME, "--version", "9", "--alias", CHALLENGER], capsys)
    assert status == 2 and "has no version 9" in err
    assert get_by_alias(NAME, CHALLENGER) is None


def test_registered_names_spell_variants_with_hyphens() -> None:
    assert registry.registered_name("psc", "seg_only") == "semcolor-psc-seg-only"
    assert registry.registered_name("cls", "semantic_gan") == "semcolor-cls-semantic-gan"
    assert registry.registered_name("sdc") == "semcolor-sdc"
    assert registry.split_registered_name("semcolor-psc-seg-only") == ("psc", "seg_only")
    assert registry.split_registered_name("semcolor-psc-seg_only") == ("psc", "seg_only")  # older spelling
    assert registry.model_key("semcolor-sdc-no-in") == "sdc_no_in"
    with pytest.raises(ValueError, match="semcolor-<family>-<variant>"):
        registry.split_registered_name("psc-full")
    with pytest.raises(ValueError, match="without '-'"):
        registry.registered_name("p-sc", "full")


def test_model_uris_that_do_not_resolve_are_one_line_saying_what_exists(store) -> None:
    from semcolor.model_reference import resolve_checkpoint

    registry.check_model_uri(f"models:/{NAME}/2")  # exists: no error
    registry.check_model_uri("runs:/abc/model")  # not a registry URI: not checked here
    with pytest.raises(LookupError) as typo:
        registry.check_model_uri("models:/semcolor-psc-plian@champion")
    assert "did you mean semcolor-psc-plain?" in str(typo.value) and "\n" not in str(typo.value)
    with pytest.raises(LookupError) as no_alias:
        registry.check_model_uri(f"models:/{NAME}@champion")
    message = str(no_alias.value)
    assert f"{NAME} has no alias 'champion' (aliases: none; versions: 1, 2)" in message
    assert f"semcolor promote {NAME} --version 2" in message
    with pytest.raises(LookupError, match="has no version 7; it has 1, 2"):
        registry.check_model_uri(f"models:/{NAME}/7")
    # loading goes through the same check: a FileNotFoundError of one line, not MLflow's traceback
    with pytest.raises(FileNotFoundError, match="has no alias 'champion'"):
        resolve_checkpoint(f"models:/{NAME}@champion")
    promote(NAME, 1)
    assert resolve_checkpoint(f"models:/{NAME}@champion").is_file()


def test_best_champion_of_a_family_by_its_recorded_metric(store) -> None:
    assert registry.best_champion("psc", "psnr") is None  # no champion yet
    promote(NAME, 1)
    assert registry.best_champion("psc", "psnr") is None  # a champion without the metric's tag
    client().set_model_version_tag(NAME, "1", "semcolor.metric.psnr", "21.5")
    assert registry.best_champion("psc", "psnr") == f"models:/{NAME}@champion"
    assert registry.best_champion("sdc", "psnr") is None
