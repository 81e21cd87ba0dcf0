"""The schema is the one home of every default: config/README.md and the code agree with it."""

import ast
import copy
import math
import re
from pathlib import Path

import pytest
import yaml

from convbias.config import ConfigError, Study, load_config
from convbias.schema import schema, with_defaults
from convbias.specs import DatasetSpec, FigureSpec, ModelSpec, PretrainedSpec, Schedule, TrainSpec

ROOT = Path(__file__).parents[1]
SECTIONS = {"datasets": "dataset", "experiments": "experiment", "pretrained": "pretrained", "figures": "figure"}
DOCUMENTED = {**SECTIONS, "claims": "claims", "mirrors": "mirror"}  # sections of config/README.md, by heading


def schema_keys(node: dict, prefix: str = "") -> dict[str, dict]:
    """Every key of a schema section, dotted (``optimizer.lr``), with its schema node."""
    keys = {}
    for key, sub in node.get("properties", {}).items():
        keys[prefix + key] = sub
        keys.update(schema_keys(sub, prefix + key + "."))
    return keys


def readme_rows() -> dict[str, dict[str, tuple[str, str]]]:
    """{section kind: {dotted key: (default cell, meaning cell)}} from the tables of config/README.md."""
    rows, kind = {}, None
    for line in (ROOT / "config" / "README.md").read_text().splitlines():
        heading = re.match(r"## `(\w+)(\.<name>)?`", line)
        if heading:
            kind = DOCUMENTED[heading.group(1)]
            rows[kind] = {}
        elif line.startswith("## "):
            kind = None
        elif kind and line.startswith("| `"):
            cells = [c.strip() for c in line.strip("|").split(" | ")]
            names = re.findall(r"`([\w.]+)`", cells[0])
            defaults = cells[2].split(", ") if len(names) > 1 else [cells[2]]
            for name, value in zip(names, defaults, strict=True):
                rows[kind][name] = (value, cells[3])
    return rows


def same(cell: str, value) -> bool:
    cell = cell.replace("`", "").strip()
    if "≈" in cell:
        return math.isclose(float(cell.split("≈")[1]), value, rel_tol=1e-3)
    return yaml.safe_load(cell) == value


@pytest.mark.parametrize("kind", DOCUMENTED.values())
def test_readme_documents_every_key_with_the_schemas_default(kind):
    documented = readme_rows()[kind]
    for key, node in schema_keys(schema()["$defs"][kind]).items():
        parent = key.rsplit(".", 1)[0]
        if key.startswith("synthetic."):  # documented in the meaning of `synthetic`: "`n_train` (5000)"
            meaning = documented["synthetic"][1]
            found = re.search(rf"`{key.split('.')[1]}` \(([^)]*)\)", meaning)
            assert found and same(found.group(1), node["default"]), key
            continue
        if "properties" in node or (key != parent and parent in documented):
            continue  # a group (its keys are rows) or a key documented with its parent
        assert key in documented, f"config/README.md has no row for {kind} key {key!r}"
        cell = documented[key][0]
        if "default" in node:
            assert same(cell, node["default"]), f"{kind}.{key}: README says {cell!r}, schema {node['default']!r}"
        else:
            assert not same(cell, None) and not re.fullmatch(r"[\d.]+|true|false", cell), \
                f"{kind}.{key} has no default in the schema but README gives {cell!r}"


def test_the_readme_names_no_key_the_schema_lacks():
    for kind, documented in readme_rows().items():
        keys = schema_keys(schema()["$defs"][kind])
        assert set(documented) <= set(keys), f"{kind}: {set(documented) - set(keys)}"


def test_a_spec_built_from_a_bare_experiment_takes_every_default_from_the_schema():
    bare = {"dataset": "d", "model": {"arch": "lenet"}, "epochs": 3}
    spec = TrainSpec.from_config(bare)
    defaults = schema()["$defs"]["experiment"]["properties"]
    opt, sched, model = (defaults[k]["properties"] for k in ("optimizer", "schedule", "model"))
    assert spec == TrainSpec(model=ModelSpec("lenet"), epochs=3)
    assert (spec.lr, spec.momentum, spec.weight_decay, spec.batch_size) == tuple(
        opt[k]["default"] for k in ("lr", "momentum", "weight_decay", "batch_size"))
    assert spec.schedule == Schedule(sched["kind"]["default"], sched["gamma"]["default"], sched["step_size"]["default"])
    assert math.isclose(spec.schedule.gamma, 10 ** (-1 / 25))
    assert (spec.model.width, spec.model.head, spec.model.hidden, spec.model.dropout) == tuple(
        model[k]["default"] for k in ("width", "head", "hidden", "dropout"))
    assert (spec.init, spec.init_std, spec.augment, spec.precision, spec.compile) == (
        defaults["init"]["properties"]["scheme"]["default"], defaults["init"]["properties"]["std"]["default"],
        defaults["augment"]["default"], defaults["precision"]["default"], defaults["compile"]["default"])
    with pytest.raises(TypeError):
        TrainSpec(model=ModelSpec("lenet"))  # epochs is required, as in the schema


def test_library_code_has_no_default_of_its_own_for_a_config_key():
    """`entry.get("key", literal)` for a key the schema gives a default would be a second home."""
    nodes = [(key.rsplit(".", 1)[-1], node) for kind in SECTIONS.values()
             for key, node in schema_keys(schema()["$defs"][kind]).items()]
    # names with a default wherever they occur (a figure's `seeds` has none, an experiment's has one)
    keyed = {name for name, _ in nodes} - {name for name, node in nodes if "default" not in node}
    offenders = []
    for path in sorted((ROOT / "src" / "convbias").rglob("*.py")) + sorted((ROOT / "workflow").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
                    and len(node.args) == 2 and isinstance(node.args[0], ast.Constant)
                    and node.args[0].value in keyed and not isinstance(node.func.value, ast.Attribute)):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} .get({node.args[0].value!r}, …)")
    assert not offenders, offenders


def test_load_config_fills_every_level_and_names_bad_keys():
    config = {"datasets": {"d": {"source": "mnist", "path": "x"}},
              "experiments": {"e": {"dataset": "d", "model": {"arch": "lenet"}, "epochs": 2}},
              "figures": {"f": {"kind": "layer", "experiments": ["e"], "caption": "c"}}}
    load_config(config)
    assert config["datasets"]["d"] == with_defaults("dataset", {"source": "mnist", "path": "x"})
    assert config["datasets"]["d"]["download"] is True and config["datasets"]["d"]["pixel_shuffle"] == "none"
    assert config["experiments"]["e"]["optimizer"]["batch_size"] == 128 and config["experiments"]["e"]["seeds"] == [0, 1, 2]
    assert config["figures"]["f"]["layer"] == 1 and config["figures"]["f"]["study"] == "paper"
    assert config["pretrained"] == {}
    a, b = with_defaults("experiment", {"model": {"arch": "lenet"}}), with_defaults("experiment", {"model": {"arch": "lenet"}})
    a["seeds"].append(9)
    assert b["seeds"] == [0, 1, 2]  # defaults are copies, never shared
    with pytest.raises(ConfigError, match=r"experiments\.e\.optimizer: unknown key 'lrr'"):
        load_config({**config, "experiments": {"e": {**config["experiments"]["e"], "optimizer": {"lrr": 1}}}})
    with pytest.raises(ConfigError, match="invalid config: experiments.e.dataset is 'nope'"):
        load_config({**config, "experiments": {"e": {**config["experiments"]["e"], "dataset": "nope"}}})
    two = {"e": config["experiments"]["e"], "e2": {**config["experiments"]["e"], "seeds": [0, 1]}}
    grid = {"kind": "grid", "experiments": ["e", "e2"], "seeds": [2], "caption": "c"}  # e2 is not the first
    with pytest.raises(ConfigError, match="figures.g.seeds has 2, which is not one of experiment e2's seeds"):
        load_config({**config, "experiments": two, "figures": {"g": grid}})


def test_the_study_wide_precision_is_every_experiments_unless_it_sets_its_own():
    base = {"datasets": {"d": {"source": "mnist", "path": "x"}}, "figures": {},
            "experiments": {"plain": {"dataset": "d", "model": {"arch": "lenet"}, "epochs": 2},
                            "own": {"dataset": "d", "model": {"arch": "lenet"}, "epochs": 2, "precision": "bf16"}}}
    for study_wide, expected in ((None, "fp32"), ("tf32", "tf32"), ("fp32", "fp32")):
        config = copy.deepcopy(base) | ({"precision": study_wide} if study_wide else {})
        study = load_config(config)
        assert study.experiments["plain"].train.precision == expected == config["experiments"]["plain"]["precision"]
        assert study.experiments["own"].train.precision == "bf16"  # set in the experiment: left alone
    with pytest.raises(ConfigError, match=r"precision: 'tf16' is not one of \['fp32', 'tf32', 'bf16'\]"):
        load_config(copy.deepcopy(base) | {"precision": "tf16"})
    # documented with the schema's default, and the shipped study: paper experiments follow it, the CPU
    # studies (quickstart, ladder) do not
    row = next(line for line in (ROOT / "config" / "README.md").read_text().splitlines() if line.startswith("| `precision` |"))
    assert same(row.split(" | ")[2], schema()["properties"]["precision"]["default"])
    shipped = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    study = load_config(shipped | {"precision": "tf32"})
    for name, exp in study.experiments.items():
        assert exp.train.precision == ("fp32" if name.startswith(("quickstart", "ladder")) else "tf32"), name


def test_the_training_order_comes_from_the_config_and_quasi_random_refuses_the_os_cache():
    spec = lambda **kw: DatasetSpec.from_config({"source": "mnist", "path": "x", **kw})  # noqa: E731
    assert spec().training_order() == "random" and spec(source="imagenet").training_order() == "quasi_random"
    assert spec(order="quasi_random").training_order() == "quasi_random"
    assert spec(source="imagenet", order="random").training_order() == "random"
    assert spec().os_cache is None and spec(os_cache=False).os_cache is False
    assert spec().identity() == spec(order="quasi_random", os_cache=True).identity()  # the files are the same
    config = {"datasets": {"d": {"source": "mnist", "path": "x", "order": "quasi_random", "os_cache": True}},
              "experiments": {"e": {"dataset": "d", "model": {"arch": "lenet"}, "epochs": 2}}, "figures": {}}
    with pytest.raises(ConfigError, match=r"datasets\.d\.os_cache is true, but its order is quasi_random"):
        load_config(config)
    config["datasets"]["d"]["os_cache"] = False
    load_config(config)


def test_the_typed_specs_of_the_project_config_are_its_entries():
    """Every entry of config/config.yaml becomes its typed spec, and the spec's dict (what a rule
    passes to its job) is the entry with the schema's defaults: no key lost, none invented."""
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    raw = {section: dict(config.get(section, {})) for section in SECTIONS}
    study = load_config(config)
    assert isinstance(study, Study) and all(getattr(study, s).keys() == raw[s].keys() for s in SECTIONS)
    for section, kind in SECTIONS.items():
        for name, entry in raw[section].items():
            spec = getattr(study, section)[name]
            if kind == "experiment":
                assert spec.train == TrainSpec.from_config(entry) and spec.dataset == entry["dataset"]
                assert spec.seeds == tuple(with_defaults(kind, entry)["seeds"])
            else:
                assert spec.to_dict() == with_defaults(kind, entry) == config[section][name], (section, name)
    measure = next(f for f in study.figures.values() if f.panels)
    assert isinstance(measure.panels, tuple) and isinstance(measure.panels[0], tuple)  # specs are immutable


def test_specs_fill_their_entries_from_the_schema():
    synthetic = DatasetSpec.from_config({"source": "synthetic", "synthetic": {"n_train": 50}})
    assert synthetic.synthetic.n_train == 50 and synthetic.synthetic.n_test == 1000 and synthetic.path is None
    assert synthetic.identity()["synthetic"]["n_train"] == 50 and "path" not in synthetic.identity()
    pretrained = PretrainedSpec.from_config({"weights": "w.pth", "arch": "vgg11"})
    assert pretrained.download is False and pretrained.init == "kaiming_normal"
    figure = FigureSpec.from_config({"kind": "pretrained", "pretrained": "p", "caption": "c"})
    assert figure.experiments is None and figure.to_dict() == {"kind": "pretrained", "pretrained": "p", "caption": "c",
                                                                "layer": 1, "columns": 2, "study": "paper"}


def test_the_paper_study_follows_the_fidelity_table():
    """The choices config/README.md's Fidelity table records, read from the shipped config."""
    study = load_config(yaml.safe_load((ROOT / "config" / "config.yaml").read_text()))
    experiments, figures = study.experiments, study.figures
    for name in figures["fig20"].experiments:  # the authors' per-image shuffle, training images only
        assert study.datasets[experiments[name].dataset].pixel_shuffle == "per_image_train"
    fig15 = experiments["vgg19_imagenet_normal_init"]
    assert (fig15.train.init, fig15.train.init_std, len(fig15.seeds)) == ("normal", 0.01, 3)
    assert [list(p) for p in figures["fig15"].panels] == [list(range(9, 17))]  # the last 8 of VGG19's 16 conv layers
    paper = {e for f in figures.values() if f.study == "paper" for e in f.experiments or ()}
    for name in paper:
        model = experiments[name].train.model
        if model.arch.startswith("vgg") or model.arch == "alexnet":
            assert model.head == "torchvision", name
        if model.arch == "lenet":
            assert (model.head, experiments[name].train.init) == ("lenet", "xavier_uniform"), name
        # where text and code disagree, the code: torchvision's VGG init, PyTorch's for AlexNet, standardized pixels
        init = experiments[name].train.init
        if model.arch.startswith("vgg"):
            assert init == ("normal" if name == "vgg19_imagenet_normal_init" else "torchvision_vgg"), name
        if model.arch == "alexnet":
            assert init == "torchvision_default", name
        dataset = experiments[name].dataset
        assert study.datasets[dataset].pixel_range == ("unit" if dataset == "cifar10_plus" else "standardize"), name
    fig22 = [len(figures["fig22"].seeds or experiments[e].seeds) for e in figures["fig22"].experiments]
    assert len(set(fig22)) == 1  # both schedules average the same number of runs


def test_a_vgg_on_images_too_small_for_its_poolings_is_refused_with_the_fix():
    """28×28 MNIST through a VGG's five poolings leaves no pixel: said when the config is read,
    naming the experiment, the dataset, the size and the fix, not as a torch error in the job."""
    config = {"datasets": {"d": {"source": "mnist", "path": "x", "pad": 0}},
              "experiments": {"e": {"dataset": "d", "model": {"arch": "vgg11"}, "epochs": 2}}, "figures": {}}
    with pytest.raises(ConfigError, match=r"invalid config: experiments\.e: vgg11 does not run on dataset d's "
                                          r"28×28 images .*pad: 2 makes 28×28 images 32×32"):
        load_config(config)
    config["datasets"]["d"]["pad"] = 2
    load_config(config)
    config["experiments"]["e"]["model"]["arch"] = "lenet"  # the paper's LeNet runs on 28×28
    config["datasets"]["d"]["pad"] = 0
    load_config(config)


def test_reinit_epochs_must_be_saved_epochs_and_hold_what_c5_and_critical_figures_read():
    base = {"datasets": {"d": {"source": "mnist", "path": "x"}},
            "experiments": {"e": {"dataset": "d", "model": {"arch": "lenet"}, "epochs": 4, "reinit_epochs": [0, 1]}},
            "figures": {"c": {"kind": "critical", "experiments": ["e"], "caption": "c"}}}
    study = load_config(copy.deepcopy(base))
    assert study.experiments["e"].swept_epochs() == [0, 1]
    unset = copy.deepcopy(base)
    del unset["experiments"]["e"]["reinit_epochs"]
    assert load_config(unset).experiments["e"].swept_epochs() == [0, 1, 2, 3, 4]  # every saved epoch
    for epochs, claims, message in (
            ([0, 5], {}, r"experiments\.e\.reinit_epochs has 5, but the experiment trains 4 epochs"),
            ([1], {"reset_epoch": 2}, r"experiments\.e\.reinit_epochs leaves out epoch 2, whose re-initialization drop "
                                      r"claim C5 reads"),
            ([1], {"reset_epoch": 1}, r"figures\.c draws each layer's drop when reset to epoch 0, but "
                                      r"experiments\.e\.reinit_epochs leaves epoch 0 out")):
        config = copy.deepcopy(base) | {"claims": claims}
        config["experiments"]["e"]["reinit_epochs"] = epochs
        with pytest.raises(ConfigError, match=message):
            load_config(config)


def test_the_one_renaming_from_yaml_to_code_is_the_documented_one():
    """Every TrainSpec field is the experiment key of its own name, but those of specs.RENAMED, which
    config/README.md lists; each renamed key carries its value into its field."""
    from dataclasses import fields

    from convbias.specs import RENAMED

    lines = (ROOT / "config" / "README.md").read_text().split("| config key | `TrainSpec` field |", 1)[1].splitlines()
    table = dict(re.findall(r"^\| `([\w.]+)` \| `(\w+)` \|$", "\n".join(lines[2:lines.index("", 1)]), re.M))
    assert table == RENAMED
    keys = schema_keys(schema()["$defs"]["experiment"])
    for name in (f.name for f in fields(TrainSpec)):
        assert name in RENAMED.values() or name in keys, name
    values = {"init": {"scheme": "xavier_uniform", "std": 0.5},
              "optimizer": {"lr": 0.3, "momentum": 0.7, "weight_decay": 0.001, "batch_size": 32}}
    spec = TrainSpec.from_config({"model": {"arch": "lenet"}, "epochs": 1, **values})
    for path, name in RENAMED.items():
        section, key = path.split(".")
        assert getattr(spec, name) == values[section][key], path
