"""The ``cir`` command's parser: no heavy imports to print help, every config field reached
from a flag (and every flag reaching its config), one spelling per idea, refused combinations."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cir_module.cli import build_parser, main
from cir_module.cli.rerank import RERANK_TRAIN_FIXED, rerank_train_config
from cir_module.cli.train import train_config

ROOT = Path(__file__).resolve().parent.parent

# What printing help must not load: each takes seconds to import, or drags in a service.
HEAVY = ("torch", "transformers", "onnxruntime", "ray", "weaviate", "uvicorn", "fastapi")


def _python(code: str) -> subprocess.CompletedProcess:
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": path},
        capture_output=True,
        text=True,
        timeout=120,
    )


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _verbs(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """Every leaf verb as (path, parser), e.g. (("rerank", "train"), ...)."""
    children = _subparsers(parser)
    if not children:
        yield path, parser
    for name, child in children.items():
        yield from _verbs(child, (*path, name))


def test_help_of_every_verb_imports_nothing_heavy():
    """`cir --help` and each verb's help in a fresh interpreter: none of HEAVY is loaded."""
    code = f"""
import json, sys
from cir_module.cli import build_parser, main
paths = [[]]
def walk(parser, path):
    for action in parser._actions:
        if hasattr(action, "choices") and isinstance(action.choices, dict):
            for name, child in action.choices.items():
                paths.append(path + [name])
                walk(child, path + [name])
walk(build_parser(), [])
for path in paths:
    try:
        main([*path, "--help"])
    except SystemExit:
        pass
print(json.dumps({{"verbs": len(paths), "heavy": [m for m in {HEAVY!r} if m in sys.modules]}}))
"""
    result = _python(code)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["verbs"] > 15  # every verb's help was printed, not just the top level
    assert report["heavy"] == []


def test_python_dash_m_runs_the_command():
    result = _python("import runpy, sys; sys.argv = ['cir', '--help']; "
                     "runpy.run_module('cir_module.cli', run_name='__main__')")  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("usage: cir")


def _every_option(parser: argparse.ArgumentParser) -> tuple[list[str], dict[str, object]]:
    """A command line giving every option of ``parser`` a value unlike its default and unlike
    every other option's (so that two swapped flags show); returns it and dest -> value."""
    argv, given = [], {}
    for i, action in enumerate(parser._actions):
        if not action.option_strings or isinstance(action, argparse._HelpAction):
            continue
        flag = action.option_strings[-1]
        if action.nargs == 0:  # store_true
            argv.append(flag)
            given[action.dest] = True
            continue
        if action.choices:
            value = [c for c in action.choices if c != action.default][-1]
        elif action.type is int:
            value = 1000 + i
        elif action.type is float:
            value = i + 0.25
        else:
            value = f"value-{i}"
        argv += [flag, str(value)]
        given[action.dest] = value
    return argv, given


def _check_config(
    config, given: dict[str, object], fixed: tuple[str, ...], derived: tuple[str, ...] = ()
) -> set[str]:
    """Each field of ``config`` holds its flag's value (or its default, for ``fixed``; the
    caller checks ``derived`` fields, built from several flags); returns the options that
    reached no field."""
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if field.name in derived:
            continue
        if field.name in fixed:
            assert value == field.default, field.name
            continue
        assert field.name in given, f"{type(config).__name__}.{field.name} has no flag"
        assert value == given[field.name], f"--{field.name.replace('_', '-')} is not passed on"
    return set(given) - {f.name for f in dataclasses.fields(config)}


def test_every_train_config_field_comes_from_its_flag():
    train = _subparsers(build_parser())["train"]
    argv, given = _every_option(train)
    # --recipe names a set of defaults (tested below), not a field of its own.
    at = argv.index("--recipe")
    del argv[at : at + 2]
    given.pop("recipe")
    config = train_config(build_parser().parse_args(["train", *argv]))
    # The benchmark's scene loss, weighted on the embedding and on the image tokens.
    scene = {"embedding": given.pop("scene_loss"), "tokens": given.pop("token_scene_loss")}
    assert config.auxiliary_losses == {"scene": scene}
    assert _check_config(config, given, (), derived=("auxiliary_losses",)) == {"eval_split"}


def test_train_options_not_given_keep_the_config_defaults():
    from cir_module.training import TrainConfig

    args = build_parser().parse_args(["train", "--data", "d", "--out", "o"])
    assert train_config(args) == TrainConfig(data="d", out="o")


def test_every_rerank_train_config_field_comes_from_its_flag():
    rerank_train = _subparsers(_subparsers(build_parser())["rerank"])["train"]
    argv, given = _every_option(rerank_train)
    config = rerank_train_config(build_parser().parse_args(["rerank", "train", *argv]))
    assert _check_config(config, given, fixed=RERANK_TRAIN_FIXED) == set()


def test_a_flag_shared_by_verbs_has_the_same_choices_everywhere():
    """One idea, one spelling: e.g. --enhance is none|keywords in `train` and `rar eval`."""
    choices: dict[str, dict[tuple[str, ...], tuple]] = {}
    for path, parser in _verbs(build_parser()):
        for action in parser._actions:
            for flag in action.option_strings:
                if action.choices:
                    choices.setdefault(flag, {})[path] = tuple(action.choices)
    assert set(choices["--enhance"]) == {("train",), ("rar", "eval")}
    for flag, by_verb in choices.items():
        assert len(set(by_verb.values())) == 1, (flag, by_verb)


def test_enrich_refuses_a_state_file_on_ray(capsys, tmp_path):
    """The Ray job keeps no cursor: --state would be silently unused, so it is refused before
    anything connects or captions."""
    state = tmp_path / "state.json"
    with pytest.raises(SystemExit) as stop:
        main(["enrich", "--collection", "X", "--ray", "--state", str(state)])
    assert stop.value.code == 2
    assert "--state: not allowed with argument --ray" in capsys.readouterr().err


def test_a_recipe_sets_the_config_and_given_flags_override_it():
    from cir_module.training.recipes import load_recipe

    recipe = load_recipe("shapes-60min")["config"]
    argv = ["train", "--recipe", "shapes-60min", "--data", "d", "--out", "o", "--lr", "0.5"]
    config = train_config(build_parser().parse_args(argv))
    assert config.lr == 0.5 and recipe["lr"] != 0.5
    assert config.model == recipe["model"] and config.epochs == recipe["epochs"]
    assert config.auxiliary_losses == recipe["auxiliary_losses"]
    argv += ["--token-scene-loss", "3"]
    config = train_config(build_parser().parse_args(argv))
    assert config.auxiliary_losses == {"scene": {"embedding": 0.0, "tokens": 3.0}}
    with pytest.raises(ValueError, match="unknown recipe"):
        train_config(build_parser().parse_args(["train", "--recipe", "nope", "--data", "d",
                                                "--out", "o"]))  # fmt: skip
