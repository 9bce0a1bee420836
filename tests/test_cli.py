"""The command line: records, listings, one-line errors and instant start-up."""

import json
import shutil
import subprocess
import sys

import pytest


RECORD_KEYS = {
    "id", "kind", "arch", "arch_kwargs", "width", "seed", "dataset", "recipe", "epochs", "metrics", "checkpoint",
    "sha256", "device", "wall_seconds", "created_at", "anchors",
}


@pytest.fixture
def reg(home, request, anchor_home):
    """The test's registry: when the test uses `trained`, a copy of conftest's `anchor_home((1, 2), "cpu")`
    (trained once per session instead of once per test), else empty."""
    from starcli.registry import open_registry

    if "trained" in request.fixturenames:
        shutil.copytree(anchor_home((1, 2), "cpu"), home, dirs_exist_ok=True)  # database, blobs, dataset cache
    r = open_registry(home)
    yield r
    r.close()


@pytest.fixture
def trained(reg, tiny_config):
    from starcli.solutions import records

    found = sorted(records.query(reg, kind="anchor"), key=lambda sol: sol.seed)
    assert [sol.seed for sol in found] == [1, 2]
    return found


@pytest.mark.slow
def test_train_prints_a_json_list_of_records(home, cli, tiny_config):
    code, out, err = cli("train", "--seed", "1-2", "--width", "32", "--epochs", "3", "--device", "cpu", "--json")
    assert code == 0, err
    records = json.loads(out)
    assert [r["seed"] for r in records] == [1, 2]
    assert all(RECORD_KEYS <= set(r) for r in records)
    assert records[0]["anchors"] == [] and records[0]["kind"] == "anchor"
    assert set(records[0]["metrics"]) == {"train_loss", "train_acc", "test_loss", "test_acc"}
    # Running it again trains nothing and says so.
    code, out2, err2 = cli("train", "--seed", "1-2", "--width", "32", "--epochs", "3", "--device", "cpu", "--json")
    assert [r["id"] for r in json.loads(out2)] == [r["id"] for r in records]
    assert "already registered" in err2


def test_list_filters_and_formats(trained, cli):
    code, out, _ = cli("list", "--json", "--kind", "anchor", "--width", "32")
    assert code == 0 and [r["id"] for r in json.loads(out)] == [s.id for s in trained]
    assert json.loads(cli("list", "--json", "--width", "99")[1]) == []
    csv_out = cli("list", "--csv")[1].splitlines()
    assert csv_out[0].startswith("id,kind,arch") and len(csv_out) == 3
    md = cli("list", "--md")[1].splitlines()
    assert md[0].startswith("| id | kind") and len(md) == 4
    code, _, err = cli("list", "--json", "--csv")
    assert code == 2 and "one output format" in err


def test_show_prints_one_full_record(trained, cli):
    code, out, _ = cli("show", str(trained[0].id), "--json")
    rec = json.loads(out)
    assert code == 0 and RECORD_KEYS <= set(rec) and rec["config"]["epochs"] == 3
    assert rec["checkpoint"].endswith(".safetensors")


@pytest.mark.parametrize(
    "args, code, needle",
    [
        (("show", "42"), 1, "no solution with id 42"),
        (("show", "x"), 2, "must be an integer"),
        (("train", "--seed", "5-1"), 2, "descending range"),
        (("train", "--seed", "1", "--recipe", "nope"), 1, "unknown recipe"),
        (("train", "--seed", "1", "--device", "cuda:7"), 1, "device"),
        (("train", "--seed", "1", "--device", "tpu"), 1, "device"),
        (("train", "--seed", "1", "--set", "dataset=imagenet"), 2, "unknown dataset"),  # a bad config value, like any other
        (("train", "--seed", "1", "--epochs", "0"), 2, "epochs"),
        (("train", "--bogus"), 2, "No such option"),
        (("register", "x.pt", "--arch", "mlp"), 2, "--arch and --dataset"),
    ],
)
def test_bad_input_is_one_line_on_stderr_with_a_non_zero_exit_and_no_change(trained, cli, reg, args, code, needle):
    before = (reg.home / "registry.db").read_bytes()
    got, out, err = cli(*args)
    assert got == code, err
    assert needle in err and err.count("\n") == 1 and "Traceback" not in err
    assert (reg.home / "registry.db").read_bytes() == before  # not a row, not a page written
    from starcli.solutions import records

    assert len(records.query(reg)) == len(trained)


def test_cifar_without_a_data_dir_is_a_one_line_error(home, cli):
    code, _, err = cli("train", "--recipe", "cifar10-resnet18", "--seed", "1")
    assert code == 1 and "--data-dir" in err and err.count("\n") == 1


def test_debug_shows_the_traceback(home, cli):
    with pytest.raises(Exception):
        cli("--debug", "show", "42")


def test_help_list_and_show_do_not_import_torch(trained, home):
    code = (
        "import sys; from starcli.cli import main; "
        "[main(a) for a in (['--help'], ['list'], ['show', '1'], ['list', '--json'])]; "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={"STARLIGHT_HOME": str(home), "PATH": ""})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "False"


def test_doctor_reports_versions_devices_and_datasets(home, cli):
    code, out, _ = cli("doctor", "--json")
    info = json.loads(out)
    assert code == 0 and "cpu" in info["devices"] and info["datasets"]["mnist1d"] == "embedded"
    assert info["home"] == str(home)
