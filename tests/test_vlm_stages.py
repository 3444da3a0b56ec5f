"""The VLM trained in stages (``cir vlm train``, and the research stages through
``python -m research.cli vlm-train``): each stage on a tiny model and a tiny hard benchmark,
the chain vision -> caption -> ... -> verify, resuming, and the result served as the reranker
its folder records. The research kinds (describe-and-verify) are registered by importing
:mod:`research.describe`, and in the services started here through ``CIR_PLUGINS``."""

from __future__ import annotations

import dataclasses
import json
import random
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

from cir_module.cli import VERB_GROUPS, build_parser
from cir_module.cli.vlm import stage_config
from cir_module.data.benchmark import (
    TIERS,
    describe_changes,
    generate_benchmark,
    load_edit_ops,
    load_scene_graphs,
    tier_of,
)
from cir_module.data.hard import HardObject
from cir_module.data.reasoning import reasoning_path
from cir_module.eval.inprocess import EvalSplit
from cir_module.eval.readers import read_cirr
from cir_module.rerank.load import load_reranker
from cir_module.rerank.scorer import LVLMReranker
from cir_module.vlm.prompt import DESCRIBE_PROMPT
from cir_module.vlm_training import StageConfig, load_stage, registered_stages, train_stage
from cir_module.vlm_training.config import PRODUCT_STAGES, STARTS_FROM
from cir_module.vlm_training.stages import STAGE_LOSSES
from cir_module.vlm_training.train import image_side_for, prepare_folder, read_stage
from research import describe as _describe  # noqa: F401  (registers the describe kind)
from research import stages as _stages  # noqa: F401  (registers compare, judge and rewrite)
from research.cli import PLUGIN, RESEARCH_VERBS
from research.vlm_probe import probe_stage


@pytest.fixture(autouse=True)
def _research_plugin(monkeypatch):
    """Services started by these tests serve describe-and-verify folders too."""
    monkeypatch.setenv("CIR_PLUGINS", json.dumps([PLUGIN]))


def research_parser():
    """``python -m research.cli``'s parser: cir's verbs and the research ones."""
    return build_parser((*VERB_GROUPS, *RESEARCH_VERBS))


TINY = dict(
    hidden=32,
    layers=2,
    heads=2,
    vision_depth=1,
    vision_width=32,
    vocab_size=400,
    batch_size=12,
    group=4,
    checkpoint_every=2,
)


@pytest.fixture(scope="module")
def hard_data(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("hard")
    generate_benchmark(out, seed=0, tier="hard", n_train=40, n_val=8, n_test=8)
    return str(out)


# Every stage, in the order the chain runs them (each after the stage it starts from).
CHAIN = ("vision", "caption", "compare", "judge", "rewrite", "verify")


@pytest.fixture(scope="module")
def chain(hard_data, tmp_path_factory) -> dict[str, Path]:
    """Every stage run, each from the folder of the stage it follows."""
    root = tmp_path_factory.mktemp("stages")
    folders: dict[str, Path] = {}
    for stage in CHAIN:
        init = folders[STARTS_FROM[stage][0]] if STARTS_FROM[stage] else None
        # The verify stage with its per-change read-out, which its reranker then scores by.
        extra = {"asked_weight": 1.0} if stage == "verify" else {}
        cfg = StageConfig(
            stage=stage, data=hard_data, out=str(root / stage), init=init, steps=3, **TINY, **extra
        )
        result = train_stage(cfg)
        assert result.complete and result.step == 3
        folders[stage] = root / stage
    return folders


def weights(folder: Path) -> dict[str, torch.Tensor]:
    vlm, reader, _ = load_stage(folder)
    return {**vlm.model.state_dict(), **{f"reader.{k}": v for k, v in reader.state_dict().items()}}


def test_research_registers_its_stages_and_the_package_knows_only_the_products():
    from research.stages import CompareStage, JudgeStage, RewriteStage

    assert set(registered_stages()) == set(CHAIN) == set(STAGE_LOSSES)
    assert registered_stages()[: len(PRODUCT_STAGES)] == PRODUCT_STAGES
    assert (STAGE_LOSSES["compare"], STAGE_LOSSES["judge"], STAGE_LOSSES["rewrite"]) == (
        CompareStage,
        JudgeStage,
        RewriteStage,
    )
    assert STARTS_FROM["judge"] == ("compare", "caption")
    assert STARTS_FROM["verify"] == ("caption", "verify", "rewrite")  # rewrite: from research
    # Without research (a fresh interpreter, the configuration alone: no torch), the stages
    # are the product's and a research stage is refused.
    code = (
        "import sys; from cir_module.vlm_training.config import STARTS_FROM, StageConfig\n"
        "try:\n    StageConfig(stage='judge', data='d', out='o', init='i')\n"
        "except ValueError as exc:\n    print(exc)\n"
        "print(list(STARTS_FROM), 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    refused, known = out.stdout.splitlines()
    assert refused.startswith("unknown stage 'judge'")
    assert known == "['vision', 'caption', 'verify'] False"


def test_each_stage_trains_and_logs_its_own_losses(chain):
    expected = {
        "vision": {"read_loss", "read_shape", "read_texture", "read_where"},
        "caption": {"caption_loss", "token_acc", "read_shape"},
        "compare": {"compare_loss", "token_acc", "read_shape"},
        "judge": {"answer_loss", "group_acc", "answer_acc", "read_shape"},
        "rewrite": {"rewrite_loss", "rewrite_acc", "caption_loss", "read_shape"},
        "verify": {"answer_loss", "group_acc", "answer_acc", "asked_acc", "caption_loss"},
    }
    for stage, folder in chain.items():
        lines = [json.loads(x) for x in (folder / "train_log.jsonl").read_text().splitlines()]
        assert [line["step"] for line in lines] == [1, 2, 3]
        assert expected[stage] <= set(lines[-1]), lines[-1]
        assert all(np.isfinite(line["loss"]) for line in lines)
        record = read_stage(folder)
        assert record["stage"] == stage and record["complete"] and record["step"] == 3


def test_later_stages_start_from_the_previous_stage_and_change_it(chain):
    vision, caption, compare, judge, rewrite, verify = (weights(chain[s]) for s in CHAIN)
    assert vision.keys() == caption.keys() == compare.keys() == judge.keys() == rewrite.keys()
    assert verify.keys() == caption.keys()
    # The caption stage trains the language model and (slower) the tower it was given.
    assert any(not torch.equal(vision[k], caption[k]) for k in vision if ".visual." in k)
    assert any(not torch.equal(vision[k], caption[k]) for k in vision if "language_model" in k)
    assert any(not torch.equal(caption[k], compare[k]) for k in caption if "language_model" in k)
    assert any(not torch.equal(compare[k], judge[k]) for k in compare if "language_model" in k)
    assert any(not torch.equal(caption[k], rewrite[k]) for k in caption if "language_model" in k)
    assert any(not torch.equal(caption[k], verify[k]) for k in caption if "language_model" in k)


def test_the_vision_stage_trains_only_the_tower_and_its_read_out(hard_data, chain):
    built = weights(chain["vision"])
    # The language model keeps its initial weights: rebuild the same seed without training.
    fresh = StageConfig(stage="vision", data=hard_data, out=str(chain["vision"].parent / "v0"))
    fresh = dataclasses.replace(fresh, steps=1, **TINY)
    Path(fresh.out).mkdir()
    prepare_folder(fresh, tier_of(hard_data), Path(fresh.out))
    initial = load_reranker(Path(fresh.out) / "model").model.state_dict()
    for key, value in initial.items():
        if "language_model" in key or key.startswith("lm_head"):
            assert torch.equal(value, built[key]), key
    assert any(not torch.equal(initial[k], built[k]) for k in initial if ".visual." in k)


def test_the_judge_stage_is_a_reranker_checkpoint_scored_with_the_kv_cache(hard_data, chain):
    folder = chain["judge"] / "model"
    reranker = load_reranker(folder)
    split = EvalSplit.load(hard_data, "val")
    t = split.triplets[0]
    reference = split.open(t.reference)
    assert reranker.image_side == 112 and reranker.codec.image_tokens == 16  # one per cell
    candidates = [split.open(n) for n in (t.target, *t.subset[:3])]
    cached = reranker.score(reference, t.caption, candidates)
    naive = reranker.score_naive(reference, t.caption, candidates)
    np.testing.assert_allclose(cached, naive, atol=1e-5)
    assert ((cached > 0) & (cached < 1)).all()


def test_a_stopped_stage_resumes_to_the_same_weights_as_an_uninterrupted_run(hard_data, tmp_path):
    whole = StageConfig(
        stage="vision", data=hard_data, out=str(tmp_path / "whole"), steps=4, **TINY
    )
    assert train_stage(whole).complete
    # A budget that ends the run after its first step, then the same command again.
    parts = dataclasses.replace(whole, out=str(tmp_path / "parts"), max_minutes=1e-9)
    first = train_stage(parts)
    assert (first.step, first.complete) == (1, False)
    assert read_stage(parts.out)["complete"] is False
    # As a run killed after logging step 2 but before its checkpoint would leave the log.
    with (Path(parts.out) / "train_log.jsonl").open("a") as log_file:
        log_file.write(json.dumps({"step": 2, "loss": 0.0}) + "\n")
    resumed = train_stage(dataclasses.replace(parts, max_minutes=None))
    assert (resumed.step, resumed.complete) == (4, True)
    a, b = weights(Path(whole.out)), weights(Path(parts.out))
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    steps = [json.loads(x)["step"] for x in (Path(parts.out) / "train_log.jsonl").open()]
    assert steps == [1, 2, 3, 4]


def test_a_stopped_stage_is_ended_where_it_stands_by_resuming_with_fewer_steps(hard_data, tmp_path):
    cfg = StageConfig(stage="vision", data=hard_data, out=tmp_path / "v", steps=5, **TINY)
    stopped = train_stage(dataclasses.replace(cfg, max_minutes=1e-9))
    assert (stopped.step, stopped.complete) == (1, False)
    ended = train_stage(dataclasses.replace(cfg, steps=1))
    assert (ended.step, ended.complete) == (1, True)
    assert read_stage(cfg.out)["complete"] is True and read_stage(cfg.out)["step"] == 1


def test_a_stage_refuses_a_start_that_is_not_the_previous_stage_complete(
    hard_data, chain, tmp_path
):
    with pytest.raises(ValueError, match="not a complete compare or caption stage"):
        train_stage(
            StageConfig(
                stage="judge", data=hard_data, out=str(tmp_path / "j"), init=str(chain["vision"])
            )
        )
    # The judge may also start straight from the caption stage.
    from_caption = StageConfig(
        stage="judge", data=hard_data, out=str(tmp_path / "jc"), init=str(chain["caption"]),
        **{**TINY, "steps": 1},
    )  # fmt: skip
    assert train_stage(from_caption).complete
    with pytest.raises(ValueError, match="starts from the vision stage"):
        StageConfig(stage="caption", data=hard_data, out=str(tmp_path / "c"))
    with pytest.raises(ValueError, match="holds the vision stage"):
        train_stage(
            StageConfig(
                stage="caption", data=hard_data, out=str(chain["vision"]), init=str(chain["vision"])
            )
        )


def test_probe_reports_cells_captions_and_judgements(chain, hard_data):
    report = probe_stage(chain["judge"], images=8, captions=2, judge_queries=3)
    assert report["stage"] == "judge" and report["judge_queries"] == 3
    for key in ("cells_shape", "cells_where", "caption_objects_right", "changes_exact_val"):
        assert 0.0 <= report[key] <= 1.0, key
    assert 0.0 <= report["judge_top1_val"] <= 1.0
    verify = probe_stage(chain["verify"], images=8, captions=2, judge_queries=2)
    assert 0.0 <= verify["verify_choice_top1_val"] <= 1.0 and verify["judge_queries"] == 2
    ops = load_edit_ops(hard_data, "val")
    split = EvalSplit.load(hard_data, "val", limit=2)
    asked = {ops[t.pairid] for t in split.triplets}  # the two queries' kinds of edit
    by_op = {k for k in verify if k.startswith("verify_choice_top1_val_")}
    assert by_op == {f"verify_choice_top1_val_{op}" for op in asked}
    rewrite = probe_stage(chain["rewrite"], images=8, captions=2, judge_queries=2, rationales=2)
    assert rewrite["rationale_queries"] == 2 and rewrite["rationale_pairs"] >= 6
    for key in ("rewrites_exact_val", "described_exact_val", "judge_top1_val",
                "rewrite_choice_top1_val", "rationale_agreement_val",
                "rationale_agreement_target"):  # fmt: skip
        assert 0.0 <= rewrite[key] <= 1.0, key
    vision = probe_stage(chain["vision"], images=8)
    assert "captions_exact" not in vision and "judge_queries" not in vision


def test_every_stage_config_field_comes_from_its_flag(hard_data):
    argv = ["vlm-train", "--stage", "judge", "--data", hard_data, "--out", "o", "--init", "i"]
    argv += ["--steps", "7", "--reasoning-share", "0.5", "--max-minutes", "2.5", "--hidden", "64"]
    config = stage_config(research_parser().parse_args(argv))
    with pytest.raises(SystemExit):  # cir vlm train trains the product's stages only
        build_parser().parse_args(["vlm", "train", *argv[1:]])
    assert config == StageConfig(
        stage="judge",
        data=hard_data,
        out="o",
        init="i",
        steps=7,
        reasoning_share=0.5,
        max_minutes=2.5,
        hidden=64,
    )


def test_image_side_puts_one_merged_token_on_each_cell():
    assert image_side_for(TIERS["hard"]) == 112 and image_side_for(TIERS["base"]) == 84


def test_the_judge_learns_to_write_the_reasoning_path_it_is_given(hard_data, chain, tmp_path):
    cfg = StageConfig(
        stage="judge",
        data=hard_data,
        out=tmp_path / "judge",
        init=chain["compare"],
        steps=1,
        reasoning_share=1.0,
        **TINY,
    )
    train_stage(cfg)
    record = json.loads((tmp_path / "judge" / "train_log.jsonl").read_text().splitlines()[-1])
    assert 0.0 <= record["rationale_acc"] <= 1.0
    # The rationale's tokens are exactly the reasoning path, after the prompt's head.
    vlm, reader, tier = load_stage(tmp_path / "judge")
    stage = STAGE_LOSSES["judge"](cfg, vlm, reader, tier, random.Random(0))
    t = stage.split.triplets[0]
    reasoning = reasoning_path(tier.describe, stage.scenes, t)
    ids, (start, end) = stage._prompt(t.caption, reasoning)
    assert end > start > 0
    assert vlm.tokenizer.decode(ids[start:end]) == " " + reasoning
    assert stage._prompt(t.caption, None)[1] == (0, 0)


def test_a_reranker_that_writes_its_rationale_scores_with_it_in_the_prompt(hard_data, chain):
    plain = load_reranker(chain["judge"] / "model")
    cot = load_reranker(chain["judge"] / "model", rationale=True, rationale_tokens=12)
    split = EvalSplit.load(hard_data, "val")
    t = split.triplets[0]
    reference = split.open(t.reference)
    candidates = [split.open(n) for n in (t.target, *t.subset[:2])]
    written = cot.write_rationale(reference, t.caption)
    assert isinstance(written, str) and "\n" not in written
    assert cot.query_text(reference, t.caption) == cot.prompt.with_reasoning(t.caption, written)
    with_it = plain.score(reference, cot.prompt.with_reasoning(t.caption, written), candidates)
    np.testing.assert_allclose(cot.score(reference, t.caption, candidates), with_it, atol=1e-5)
    np.testing.assert_allclose(
        cot.score_naive(reference, t.caption, candidates), with_it, atol=1e-5
    )
    assert cot.describe()["rationale"] is True and plain.describe()["rationale"] is False


def test_changes_are_described_cell_by_cell():
    describe = TIERS["hard"].describe
    red = HardObject(5, "circle", "red", "small", "solid")
    blue = HardObject(5, "circle", "blue", "small", "solid")
    square = HardObject(0, "square", "green", "large", "hollow")
    assert describe_changes(describe, (red,), (red,)) == "nothing changed"
    assert describe_changes(describe, (red,), (square, blue)) == (
        "added large hollow green square at row 1, column 1; "
        "small solid red circle at row 2, column 2 became small solid blue circle at row 2, "
        "column 2"
    )
    assert describe_changes(describe, (square, red), (red,)) == (
        "removed large hollow green square at row 1, column 1"
    )


def test_a_stage_captions_a_benchmark_through_cir_rar_captions_and_a_rerun_resumes(
    hard_data, chain, tmp_path, capsys
):
    model, out = str(chain["caption"] / "model"), tmp_path / "captions.json"
    argv = ["rar", "captions", "--captioner", "vlm", "--model", model, "--data", hard_data]
    argv += ["--split", "test", "--out", str(out), "--batch-size", "2"]
    for limit in ("3", "5"):
        args = build_parser().parse_args([*argv, "--limit", limit])
        args.func(args)
    first, second = capsys.readouterr().out.splitlines()[-2:]
    assert first.startswith("wrote 3 captions (transformers:caption/model/describe-1)")
    assert second.startswith("wrote 2 captions"), second  # the first three were kept
    captions = json.loads(out.read_text())
    test_images = sorted(EvalSplit.load(hard_data, "test").paths)
    assert sorted(captions) == test_images[:5]
    args = build_parser().parse_args(["rar", "faithfulness", str(out), "--data", hard_data])
    args.func(args)
    report = json.loads(capsys.readouterr().out)
    assert report["images"] == 5 and report["objects"] > 0
    for shares in report["attributes"].values():
        assert sum(shares.values()) == pytest.approx(1.0)
    # --targets-only: only the split's triplet targets (what aligned training needs captions of)
    targets_out = tmp_path / "targets.json"
    argv = ["rar", "captions", "--captioner", "vlm", "--model", model, "--data", hard_data]
    argv += ["--split", "test", "--targets-only", "--limit", "4", "--out", str(targets_out)]
    args = build_parser().parse_args(argv)
    args.func(args)
    targets = sorted({t.target for t in read_cirr(hard_data, "test", "shapes") if t.target})
    assert sorted(json.loads(targets_out.read_text())) == targets[:4]
    assert set(targets) < set(test_images)  # a real subset: references and negatives left out


def test_the_trained_vlm_captioner_asks_what_the_caption_stage_learned(hard_data, chain):
    from cir_module.enrich import trained_vlm_captioner
    from cir_module.vlm.chat import _TEMPLATE
    from cir_module.vlm.prompt import DESCRIBE_PROMPT

    captioner = trained_vlm_captioner(chain["caption"] / "model", batch_size=2)
    codec = captioner.backend.codec
    assert codec.side == image_side_for(tier_of(hard_data))  # the folder's, not the default
    asked = codec.encode(_TEMPLATE.format(image_part="{image}\n"), text=captioner.prompt)
    assert asked == codec.encode(DESCRIBE_PROMPT)


def test_scene_graph_captions_of_the_hard_tier_are_in_its_words(hard_data, tmp_path, capsys):
    out = tmp_path / "captions.json"
    args = build_parser().parse_args(["rar", "captions", "--data", hard_data, "--out", str(out)])
    args.func(args)
    args = build_parser().parse_args(["rar", "faithfulness", str(out), "--data", hard_data])
    args.func(args)
    report = json.loads(capsys.readouterr().out.split("\n", 1)[1])
    assert report["objects_found"] == 1.0 and report["invented_per_image"] == 0.0
    assert all(shares["right"] == 1.0 for shares in report["attributes"].values())


def test_the_rewrite_stage_is_served_as_describe_and_verify(hard_data, chain):
    from research.describe import DescribingReranker

    reranker = load_reranker(chain["rewrite"] / "model")
    assert isinstance(reranker, DescribingReranker)  # its folder says so
    assert reranker.describe()["verify"] == "describe"
    assert type(load_reranker(chain["judge"] / "model")) is LVLMReranker
    split = EvalSplit.load(hard_data, "val")
    t = split.triplets[0]
    reference = split.open(t.reference)
    written = reranker.prefix(reference, t.caption)
    caption = reranker.generate(DESCRIBE_PROMPT, [reference], 256)[0].strip()
    assert written.caption == caption  # the reasoning starts from the model's own caption
    candidates = [split.open(n) for n in (t.target, *t.subset[:3])]
    scores = reranker.score_prefixed(written, candidates)
    assert ((scores > 0) & (scores <= 1)).all() and len(set(scores.tolist())) > 1
    # The score is the description's geometric-mean token probability given the candidate.
    ids = reranker.codec.encode(DESCRIBE_PROMPT) + list(written.ids)
    pixels, grid = reranker._pixels(candidates[:1])
    with torch.inference_mode():
        logits = reranker.model(
            input_ids=torch.tensor([ids]), pixel_values=pixels, image_grid_thw=grid
        ).logits[0]
    n = len(written.ids)
    logp = torch.log_softmax(logits[-n - 1 : -1], -1)[torch.arange(n), torch.tensor(written.ids)]
    assert scores[0] == pytest.approx(logp.mean().exp().item(), rel=1e-4)
    with pytest.raises(ValueError, match="takes no RAug-Rep"):
        load_reranker(chain["rewrite"] / "model", rationale=True)


@pytest.mark.integration
@pytest.mark.parametrize(("stage", "verify"), [("rewrite", "describe"), ("verify", "changes")])
def test_a_reranker_that_writes_captions_answers_weaviates_rerank(
    hard_data, chain, tiny_checkpoint, local_model, tmp_path, stage, verify
):
    from tests.conftest import rerank_in_weaviate

    folder = chain[stage] / "model"
    env = {"CIR_RERANKER_MODEL": str(folder), "CIR_RERANKER_LAMBDA": "0.5"}
    split = EvalSplit.load(hard_data, "val")
    t = split.triplets[0]
    gallery = [split.open(n) for n in (t.reference, t.target, *t.subset)]
    name = f"CIR{stage.title()}_" + tmp_path.name.replace("-", "_")[-12:]
    keys, scores, meta = rerank_in_weaviate(tiny_checkpoint, env, gallery, t.caption, name)
    assert meta["verify"] == verify and len(keys) == len(gallery)
    reranker = load_reranker(folder)
    query_vec = local_model.embed_composed([gallery[0]], [t.caption])[0]
    ranked = [gallery[k] for k in keys]
    if verify == "changes":
        # The change verifier scores an image as its stored caption would be (one ranking
        # whichever property Weaviate sends): the cosine is the caption's text embedding's.
        cosine = local_model.embed_texts(reranker.captions(ranked)) @ query_vec
    else:
        cosine = local_model.embed_images(ranked) @ query_vec
    judged = reranker.score(gallery[0], t.caption, ranked)
    np.testing.assert_allclose(scores, cosine + 0.5 * judged, atol=1e-4)


@pytest.mark.integration
def test_the_verifier_reads_the_stored_captions_weaviates_rerank_sends(
    hard_data, chain, tiny_checkpoint, local_model, tmp_path
):
    """``rerank(property: "caption")``: the candidates' stored captions are verified as they
    are and the query carries the reference's, so nothing is captioned at query time; the
    fusion weight is the one the folder records; P(YES) equals the image path's when the
    captions are the model's own; an object without a caption ranks last."""
    from cir_module.service.encoder import EMPTY_DOCUMENT_SCORE
    from cir_module.vlm.folder import SERVED_WITH, VLM_SETTINGS, saved_settings
    from tests.conftest import rerank_in_weaviate

    folder = tmp_path / "verifier"
    shutil.copytree(chain["verify"] / "model", folder)
    settings = saved_settings(folder) | {SERVED_WITH: {"lambda": 0.5, "k": 10}}
    (folder / VLM_SETTINGS).write_text(json.dumps(settings))
    split = EvalSplit.load(hard_data, "val")
    t = split.triplets[0]
    gallery = [split.open(n) for n in (t.reference, t.target, *t.subset)]
    reranker = load_reranker(folder)
    captions: list[str | None] = list(reranker.captions(gallery))  # as cir enrich writes them
    captions[-1] = None
    name = "CIRCaptions_" + tmp_path.name.replace("-", "_")[-12:]
    env = {"CIR_RERANKER_MODEL": str(folder)}  # no CIR_RERANKER_LAMBDA: the folder's
    keys, scores, meta = rerank_in_weaviate(
        tiny_checkpoint, env, gallery, t.caption, name, captions=captions, prop="caption"
    )
    assert meta["captioned"] == 0 and meta["lambda"] == 0.5
    assert keys[-1] == len(gallery) - 1 and scores[-1] == pytest.approx(EMPTY_DOCUMENT_SCORE)
    keys, scores = keys[:-1], scores[:-1]
    query_vec = local_model.embed_composed([gallery[0]], [t.caption])[0]
    cosine = local_model.embed_texts([captions[k] for k in keys]) @ query_vec
    state = reranker.prefix_from_caption(captions[0], t.caption)
    judged = reranker.score_captions(state, [captions[k] for k in keys])
    np.testing.assert_allclose(scores, cosine + 0.5 * judged, atol=1e-4)
    from_images = reranker.score(gallery[0], t.caption, [gallery[k] for k in keys])
    np.testing.assert_allclose(judged, from_images, atol=1e-5)

    # The image property: each document gets the same score, so the same ranking (up to the
    # order of ties, which a tiny model's identical captions make).
    keys_i, scores_i, _ = rerank_in_weaviate(
        tiny_checkpoint, env, gallery[:-1], t.caption, name + "_img"
    )
    assert sorted(keys_i) == sorted(keys)
    by_key = dict(zip(keys, scores, strict=True))
    np.testing.assert_allclose(scores_i, [by_key[k] for k in keys_i], atol=1e-5)


@pytest.mark.integration
def test_rerank_eval_through_weaviate_only_runs_the_served_setting(
    hard_data, chain, tiny_checkpoint, tmp_path
):
    out = tmp_path / "rows.json"
    argv = ["rerank", "eval", "--first-stage", str(tiny_checkpoint), "--data", hard_data]
    argv += ["--reranker", str(chain["rewrite"] / "model"), "--split", "val", "--k", "4"]
    argv += ["--weaviate", "--weaviate-only", "--serve-lambda", "0.5", "--json-out", str(out)]
    args = build_parser().parse_args(argv)
    args.func(args)
    first, served = json.loads(out.read_text())
    assert first["setting"] == "first stage only" and first["lambda"] is None
    assert served["setting"] == "Weaviate rerank: describe-and-verify"
    assert served["lambda"] == 0.5 and len(served["R@1 CI"]) == 2
    # The same top 4 re-ordered: recall at 4 cannot change, at 1 it may.
    assert 0.0 <= served["R@1"] <= first["R@5"]
    latency = served["latency"]
    assert served["k"] == 4 and set(latency) == {
        f"{call}_{stat}_ms" for call in ("first_stage", "with_rerank") for stat in ("median", "p90")
    }
    assert latency["with_rerank_median_ms"] > 0 and latency["first_stage_median_ms"] > 0


def test_a_rationale_names_what_the_result_lacks_and_shows_unasked(hard_data, chain):
    from research.describe import Rationale, facts

    reranker = load_reranker(chain["rewrite"] / "model")
    split = EvalSplit.load(hard_data, "val")
    t = split.triplets[0]
    rationale = reranker.explain(split.open(t.reference), t.caption, split.open(t.target))
    written = reranker.prefix(split.open(t.reference), t.caption)
    assert (rationale.reference, rationale.target) == (written.caption, written.target)
    assert set(rationale.missing) == set(facts(rationale.target)) - set(facts(rationale.candidate))
    text = Rationale("a; b", "a; c", "a; d", ("c",), ("d",)).text()
    assert text.splitlines() == [
        "The reference shows: a; b",
        "The target must show: a; c",
        "The result shows: a; d",
        "Conclusion: NO, missing: c; and not asked for: d.",
    ]
    assert (
        Rationale("a", "b", "b", (), ())
        .text()
        .endswith("Conclusion: YES: the result shows what the modification asks.")
    )


@pytest.mark.integration
def test_weaviate_generate_returns_the_rationale_of_each_result(hard_data, chain, tiny_checkpoint):
    from tests.conftest import generate_in_weaviate

    folder = chain["rewrite"] / "model"
    split = EvalSplit.load(hard_data, "val")
    t = split.triplets[0]
    images = {n: split.open(n) for n in (t.target, *t.subset) if n != t.reference}

    def text_only(url: str) -> httpx.Response:
        # A request that is not a result and a reference gets a 4xx naming what to send.
        message = {"role": "user", "content": "hello"}
        return httpx.post(f"{url}/v1/chat/completions", json={"messages": [message]})

    objects, reply = generate_in_weaviate(
        tiny_checkpoint, folder, images, split.open(t.reference), t.caption, t.caption,
        then=text_only,
    )  # fmt: skip
    assert reply.status_code == 400 and "two images" in reply.json()["error"]
    assert len(objects) == len(images)
    reranker = load_reranker(folder)
    for obj in objects:
        candidate = images[obj.properties["title"]]
        expected = reranker.explain(split.open(t.reference), t.caption, candidate).text()
        assert obj.generative is not None and obj.generative.text == expected


def test_describing_many_queries_at_once_writes_what_one_at_a_time_writes(hard_data, chain):
    reranker = load_reranker(chain["rewrite"] / "model")
    split = EvalSplit.load(hard_data, "val")
    queries = split.triplets[:3]
    references = [split.open(t.reference) for t in queries]
    texts = [t.caption for t in queries]  # different lengths: the rewrites are left-padded
    together = reranker.prefixes(references, texts)
    alone = [reranker.prefix(r, t) for r, t in zip(references, texts, strict=True)]
    assert [(w.caption, w.target) for w in together] == [(w.caption, w.target) for w in alone]


def test_the_rewrite_loss_weighs_what_a_copy_of_the_reference_gets_wrong(hard_data, chain):
    from research.stages import RewriteStage

    vlm, reader, tier = load_stage(chain["caption"])
    cfg = StageConfig(stage="rewrite", data=hard_data, out="o", init="i", edit_weight=5.0)
    stage = RewriteStage(cfg, vlm, reader, tier, random.Random(0))
    reference = (
        "large hollow red cross at row 1, column 1; small solid brown circle at row 4, column 3; "
        "small hollow green diamond at row 4, column 4"
    )
    target = (
        "large hollow red cross at row 1, column 1; medium solid brown circle at row 4, column 3"
    )
    weights = stage.edit_weights(reference, target)
    ids = stage.tokenizer(target, add_special_tokens=False)["input_ids"]
    assert len(weights) == len(ids) + 1 and weights[-1] == 5.0  # when to stop
    words = [stage.tokenizer.decode([i]) for i in ids]
    kept = target.index(";") + 1
    # The kept phrase weighs 1 but for its first word; the changed phrase weighs 5 throughout.
    spans = stage.tokenizer(target, return_offsets_mapping=True, add_special_tokens=False)
    for (begin, _), word, weight in zip(spans["offset_mapping"], words, weights, strict=False):
        if begin == 0:
            assert weight == 5.0, word
        elif begin < kept:
            assert weight == 1.0, word
        else:
            assert weight == 5.0, word


def test_constraints_are_what_the_target_adds_and_drops():
    from research.distil import agreement, constraints

    reference = "small red circle at row 1, column 1; large blue cross at row 2, column 2"
    target = "small red circle at row 1, column 1; large green cross at row 2, column 2"
    assert constraints(reference, target) == (
        "large green cross at row 2, column 2; no large blue cross at row 2, column 2"
    )
    assert constraints(reference, reference) == ""
    scores = agreement({"a": "x; y", "b": "z"}, {"a": "y; x", "b": "w"})
    assert scores == {"queries": 2, "exact": 0.5, "fact_precision": 2 / 3, "fact_recall": 2 / 3}


def test_the_vlm_distiller_reads_the_reference_and_is_cached_by_text_and_image(hard_data, chain):
    from cir_module.enrich import QueryEnhancer
    from research.distil import DescribingDistiller, constraints

    reranker = load_reranker(chain["rewrite"] / "model")
    distiller = DescribingDistiller(reranker)
    split = EvalSplit.load(hard_data, "val")
    queries = split.triplets[:2]
    references = [split.open(t.reference) for t in queries]
    texts = [t.caption for t in queries]
    distilled = distiller.modifications(texts, references)
    written = reranker.prefixes(references, texts)
    for w, text, out in zip(written, texts, distilled, strict=True):
        assert out == (constraints(w.caption, w.target) or text)
    caption = reranker.generate(DESCRIBE_PROMPT, references[:1], 256)[0].strip()
    asked = distiller.questions(["what is left of it?"], references[:1])
    assert asked == [f"what is left of it? (the image shows: {caption})"]
    # One text with two references is two queries: the distillation depends on the image.
    enhancer = QueryEnhancer(distiller)
    out = enhancer.enhance([texts[0], texts[0]], [references[0], references[1]])
    assert out[0] == distilled[0] and enhancer.misses == 2
    assert enhancer.enhance([texts[0]], [references[0]]) == out[:1] and enhancer.hits == 1


def test_rar_distil_writes_resumes_and_scores_and_training_reads_it(
    hard_data, chain, tmp_path, capsys
):
    from cir_module.training.data import TripletData, query_key

    out = tmp_path / "queries.json"
    folder = str(chain["rewrite"] / "model")
    argv = ["rar-distil", "--data", hard_data, "--model", folder, "--split", "train"]
    argv += ["--limit", "5", "--out", str(out)]
    args = research_parser().parse_args(argv)
    args.func(args)
    first = capsys.readouterr().out.splitlines()
    assert first[0].startswith("distilled 5 queries")
    scores = json.loads(first[1])
    assert scores["queries"] == 5 and 0 <= scores["exact"] <= 1
    args.func(research_parser().parse_args([*argv[:-4], "--limit", "7", "--out", str(out)]))
    assert capsys.readouterr().out.startswith("distilled 2 queries")  # the first 5 are there
    distilled = json.loads(out.read_text())
    data = TripletData(hard_data, "train")
    with pytest.raises(ValueError, match="lack"):
        data.rewrite_queries(distilled)  # 7 of the split's triplets only
    data.triplets = data.triplets[:7]
    expected = [distilled[query_key(t.reference, t.caption)] for t in data.triplets]
    data.rewrite_queries(distilled)
    assert [t.caption for t in data.triplets] == expected


def test_settings_refuse_vlm_enhancement_without_a_chat_model():
    from pydantic import ValidationError

    from cir_module.settings import ServiceSettings

    with pytest.raises(ValidationError, match="query_enhancement=vlm needs chat_model"):
        ServiceSettings(query_enhancement="vlm")


@pytest.mark.integration
def test_the_service_sends_the_vlm_distilled_query_to_the_retriever(
    hard_data, chain, tiny_checkpoint, local_model
):
    from cir_module import compose_query
    from integration.service_process import ServiceProcess
    from research.distil import DescribingDistiller
    from tests.conftest import png_b64

    folder = chain["rewrite"] / "model"
    split = EvalSplit.load(hard_data, "val")
    t = split.triplets[0]
    reference = split.open(t.reference)
    env = {"CIR_QUERY_ENHANCEMENT": "vlm", "CIR_CHAT_MODEL": str(folder)}
    with ServiceProcess(tiny_checkpoint, env=env) as service:
        body = {"texts": [compose_query(png_b64(reference), t.caption)], "images": []}
        vector = httpx.post(f"{service.url}/vectorize", json=body).json()["textVectors"][0]
        meta = httpx.get(f"{service.url}/meta").json()["query_enhancement"]
    distilled = DescribingDistiller(load_reranker(folder)).modifications([t.caption], [reference])[
        0
    ]
    assert meta["enhancer"].startswith("vlm:") and meta["misses"] == 1
    expected = local_model.embed_composed([reference], [distilled])[0]
    np.testing.assert_allclose(vector, expected, atol=1e-5)


def test_the_judge_reads_which_candidate_cells_differ_from_the_target(hard_data, chain, tmp_path):
    cfg = StageConfig(
        stage="judge", data=hard_data, out=str(tmp_path / "jm"), init=str(chain["caption"]),
        **{**TINY, "steps": 2, "match_weight": 1.0},
    )  # fmt: skip
    # A caption folder saved before the match head existed: its read-out lacks it.
    caption = tmp_path / "caption"
    shutil.copytree(chain["caption"], caption)
    saved = torch.load(caption / "reader.pt", weights_only=True)
    old = {k: v for k, v in saved.items() if not k.startswith("match.")}
    assert len(old) < len(saved)
    torch.save(old, caption / "reader.pt")
    cfg = dataclasses.replace(cfg, init=str(caption))
    assert train_stage(cfg).complete
    lines = [json.loads(x) for x in (tmp_path / "jm" / "train_log.jsonl").read_text().splitlines()]
    assert all(0 <= line["match_acc"] <= 1 for line in lines)

    vlm, reader, tier = load_stage(tmp_path / "jm")
    stage = STAGE_LOSSES["judge"](cfg, vlm, reader, tier, random.Random(0))
    for t in stage.split.triplets[:10]:
        target, reference = stage.scenes[t.target], stage.scenes[t.reference]
        assert stage._differs(target, target) == [False] * tier.grid_cells
        changed = {o.cell for o in set(target) ^ set(reference)}
        assert (
            changed and {c for c, d in enumerate(stage._differs(target, reference)) if d} == changed
        )
    # The judge's loss reaches the match read-out (and it is off at the default weight).
    stage.loss().backward()
    assert "match_acc" in stage.metrics and reader.match[1].weight.grad.abs().sum() > 0
    reader.zero_grad(set_to_none=True)
    plain = STAGE_LOSSES["judge"](dataclasses.replace(cfg, match_weight=0.0), vlm, reader, tier,
                                  random.Random(0))  # fmt: skip
    plain.loss().backward()
    assert "match_acc" not in plain.metrics and reader.match[1].weight.grad is None


def test_changes_read_from_descriptions_are_the_scene_graphs_changes(hard_data):
    from cir_module.vlm.changes import DIFFERS, MAX_CHANGES, description_changes

    tier = tier_of(hard_data)
    split = EvalSplit.load(hard_data, "train")
    scenes = load_scene_graphs(hard_data, "train")
    pairs = [(t.reference, c) for t in split.triplets for c in (t.target, *t.subset)]
    pairs += [
        (a.reference, b.target)
        for a, b in zip(split.triplets[:-1], split.triplets[1:], strict=True)
    ]
    compared = 0
    for before, after in pairs:
        expected = describe_changes(tier.describe, scenes[before], scenes[after])
        if expected.count("; ") >= MAX_CHANGES:
            continue
        said = description_changes(
            tier.describe(scenes[before]), tier.describe(scenes[after]), differ="grid-facts"
        )
        assert said == expected
        compared += 1
    assert compared > 100 and any(
        "became" in describe_changes(tier.describe, scenes[b], scenes[a]) for b, a in pairs
    )
    # An unrelated scene: every place differs, and the list is cut short.
    many = "; ".join(
        f"small solid red circle at row {r}, column {c}" for r in (1, 2, 3, 4) for c in (1, 2, 3)
    )
    for differ in DIFFERS:
        cut = description_changes(many, "", differ=differ)
        assert cut.count("removed") == MAX_CHANGES and cut.endswith("and 2 more changes")
        assert description_changes(many, many, differ=differ) == "nothing changed"


def _apply_edits(before: str, edits: str) -> dict[str, str]:
    """The scene an "edits" change list leads to from ``before``, as ``{place: object}``: an
    independent reading of the wording (each edit checked against the scene it edits)."""
    from cir_module.data.hard.scenes import COLORS, SHAPES, SIZES, TEXTURES

    def split(fact: str) -> tuple[str, str]:
        thing, _, place = fact.rpartition(" at ")
        return place, thing

    scene = dict(split(f) for f in before.split("; "))
    slots = (SIZES, TEXTURES, tuple(COLORS), SHAPES)  # the words of an object, in order
    for edit in [] if edits == "nothing changed" else edits.split("; "):
        if edit.startswith("added "):
            place, thing = split(edit.removeprefix("added "))
            assert place not in scene
            scene[place] = thing
        elif edit.startswith("removed "):
            place, thing = split(edit.removeprefix("removed "))
            assert scene.pop(place) == thing
        elif " moved from " in edit:
            thing, places = edit.split(" moved from ")
            source, destination = places.split(" to ")
            assert scene.pop(source) == thing and destination not in scene
            scene[destination] = thing
        else:
            head, became = edit.split(" became ")
            place, thing = split(head)
            assert scene[place] == thing
            words = thing.split()
            for word in became.split():  # only the words that changed, each in its slot
                slot = next(i for i, values in enumerate(slots) if word in values)
                assert words[slot] != word
                words[slot] = word
            scene[place] = " ".join(words)
    return scene


def test_edits_wording_leads_from_one_description_to_the_other(hard_data):
    from cir_module.vlm.changes import description_changes

    tier = tier_of(hard_data)
    split = EvalSplit.load(hard_data, "train")
    scenes = load_scene_graphs(hard_data, "train")
    pairs = [(t.reference, c) for t in split.triplets for c in (t.target, *t.subset)]
    moves = shorter = 0
    for before, after in pairs:
        old, new = tier.describe(scenes[before]), tier.describe(scenes[after])
        edits = description_changes(old, new, max_changes=99, differ="grid-edits")
        facts = description_changes(old, new, max_changes=99, differ="grid-facts")
        assert _apply_edits(old, edits) == _apply_edits(new, "nothing changed")
        assert edits.count("; ") <= facts.count("; ")  # a move is one edit, not two facts
        moves += " moved from " in edits
        shorter += len(edits) < len(facts)
    assert moves > 0 and shorter > len(pairs) // 2
    assert description_changes(
        "small solid red circle at row 1, column 1; large hollow blue square at row 2, column 2",
        "small solid red circle at row 1, column 2; large hollow green square at row 2, column 2",
        differ="grid-edits",
    ) == (
        "small solid red circle moved from row 1, column 1 to row 1, column 2; "
        "large hollow blue square at row 2, column 2 became green"
    )
    with pytest.raises(ValueError, match="unknown differ"):
        description_changes("", "", differ="prose")


def verified_alone(reranker, description: str, text: str, changes: str) -> float:
    """P(YES) of one verify prompt run whole, unpadded, with no cache, times the lowest P(YES)
    at the last token of each change (the per-change read-out)."""
    from cir_module.rerank.verify import verify_row
    from cir_module.vlm.prompt import VERIFY_PROMPT

    ids = reranker.codec.encode(VERIFY_PROMPT, description=description, text=text, changes=changes)
    ends = [at for at, _ in verify_row(reranker.tokenizer, description, text, changes)[1]]
    with torch.inference_mode():
        logits = reranker.model(input_ids=torch.tensor([ids])).logits[0]
    p = torch.softmax(logits[:, [reranker.yes_id, reranker.no_id]], -1)[:, 0]
    return p[-1].item() * (p[ends].min().item() if ends else 1.0)


def test_the_verify_stage_is_served_as_change_verification(hard_data, chain):
    from cir_module.rerank.verify import ChangeVerifyingReranker, verify_row
    from cir_module.vlm.changes import description_changes

    reranker = load_reranker(chain["verify"] / "model")
    assert isinstance(reranker, ChangeVerifyingReranker)
    assert reranker.describe()["verify"] == "changes"
    assert reranker.describe()["differ"] == "fact-diff"  # the stage's default
    split = EvalSplit.load(hard_data, "val")
    t = split.triplets[0]
    reference = split.open(t.reference)
    candidates = [split.open(n) for n in (t.target, *t.subset)]
    state = reranker.prefix(reference, t.caption)
    caption = reranker.generate(DESCRIBE_PROMPT, [reference], 256)[0].strip()
    assert state.caption == caption and state.text == t.caption
    written = []
    generate = reranker.generate
    reranker.generate = lambda *a, **k: written.append(len(a[1])) or generate(*a, **k)
    scores = reranker.score_prefixed(state, candidates)
    again = reranker.score_prefixed(state, candidates[::-1])
    # Each image captioned once: the reference (among the candidates) already was.
    assert sum(written) == len({c.tobytes() for c in candidates} - {reference.tobytes()})
    np.testing.assert_allclose(again[::-1], scores, atol=1e-6)  # padding changes nothing
    assert ((scores > 0) & (scores < 1)).all()
    # Each score is P(YES) of the verify prompt, computed alone, unpadded, times the lowest
    # P(YES) at the last token of each change (the stage ran with the per-change read-out).
    assert reranker.describe()["asked_readout"] is True

    def alone(description: str, changes: str) -> float:
        return verified_alone(reranker, description, t.caption, changes)

    for candidate, score in zip(candidates, scores, strict=True):
        said = generate(DESCRIBE_PROMPT, [candidate], 256)[0]
        assert score == pytest.approx(
            alone(caption, reranker.changes_between(caption, said)), abs=1e-5
        )
    # The tiny model's captions may list no changes; true descriptions always do.
    tier, scenes = tier_of(hard_data), load_scene_graphs(hard_data, "val")
    before = tier.describe(scenes[t.reference])
    lists = [
        description_changes(before, tier.describe(scenes[n]), differ=reranker.differ)
        for n in (t.target, *t.subset)
        if n != t.reference
    ]
    assert all(verify_row(reranker.tokenizer, before, t.caption, c)[1] for c in lists)
    got = reranker.verify(before, t.caption, lists)
    for changes, score in zip(lists, got, strict=True):
        assert score == pytest.approx(alone(before, changes), abs=1e-5)
    plain = load_reranker(chain["verify"] / "model", asked_readout=False)
    unread = plain.score_prefixed(plain.prefix(reference, t.caption), candidates)
    assert (unread >= scores - 1e-6).all()  # the read-out only ever lowers a score
    with pytest.raises(ValueError, match="writes no rationale"):
        load_reranker(chain["verify"] / "model", rationale=True)


def test_the_change_verifier_takes_pmtfrs_injection_in_its_shared_half(hard_data, chain, tmp_path):
    """RAug-Rep read in the verify prompt's shared half (without and with the reasoning path
    after the modification), injected at the first token of every layer: each score is the
    whole prompt's P(YES) under the same injection (the shared half's cache carries it)."""
    from cir_module.rerank.injection import injected
    from cir_module.rerank.raug import extract_raug_in_prompt, save_raug
    from cir_module.vlm.changes import description_changes

    model = chain["verify"] / "model"
    plain = load_reranker(model)
    split = EvalSplit.load(hard_data, "val")
    tier, scenes = tier_of(hard_data), load_scene_graphs(hard_data, "val")
    examples = [
        (split.open(t.reference), t.caption, reasoning_path(tier.describe, scenes, t))
        for t in split.triplets[:4]
    ]
    vectors = extract_raug_in_prompt(plain, examples)
    assert vectors.shape == (plain.num_layers, plain.model.config.text_config.hidden_size)
    assert (vectors.norm(dim=-1) > 0).all()
    # A strong alpha: the tiny model's mean difference is small beside its hidden states.
    raug = save_raug(vectors, tmp_path / "raug.safetensors")
    steered = load_reranker(model, raug=raug, alpha=20.0)
    assert steered.describe()["raug"] is True
    assert steered.injection_layers == list(range(plain.num_layers))
    t = split.triplets[0]
    before = tier.describe(scenes[t.reference])
    lists = [
        description_changes(before, tier.describe(scenes[n]), differ=plain.differ)
        for n in (t.target, *t.subset)
        if n != t.reference
    ]
    got = steered.verify(before, t.caption, lists)
    assert np.abs(got - plain.verify(before, t.caption, lists)).max() > 1e-4
    with injected(steered.layers, steered.raug, steered.alpha, steered.injection_layers):
        whole = [verified_alone(steered, before, t.caption, c) for c in lists]
    np.testing.assert_allclose(got, whole, atol=1e-5)
    steered.alpha = 0.0  # no strength: the plain verifier's scores
    np.testing.assert_allclose(
        steered.verify(before, t.caption, lists), plain.verify(before, t.caption, lists), atol=1e-6
    )


def test_the_verify_stage_is_exported_and_describe_and_verify_is_not(chain, tmp_path):
    from cir_module.rerank.onnx_verifier import OnnxChangeVerifier
    from onnx_export.reranker import RERANK_ATOL, export_reranker

    with pytest.raises(ValueError, match="text the model generates"):
        export_reranker(chain["rewrite"] / "model", tmp_path / "rewrite")
    assert not (tmp_path / "rewrite").exists()  # nothing half-written
    # The change verifier: its captioner and its verdicts, checked against torch.
    manifest = export_reranker(chain["verify"] / "model", tmp_path / "verify")
    assert manifest["kind"] == "changes" and manifest["parity"]["captions_equal"] == 1.0
    assert manifest["parity"]["p_yes_descriptions"] <= RERANK_ATOL
    served = load_reranker(tmp_path / "verify")
    assert isinstance(served, OnnxChangeVerifier)
    assert served.differ == "fact-diff" and served.asked_readout  # as the folder records


def test_the_verify_stage_reads_true_descriptions_and_labels_the_target_yes(hard_data, chain):
    from cir_module.vlm.changes import description_changes
    from cir_module.vlm.prompt import VERIFY_PROMPT
    from cir_module.vlm_training.stages import VerifyStage, draw_group

    cfg = StageConfig(stage="verify", data=hard_data, out="o", init="i", **TINY)
    vlm, reader, tier = load_stage(chain["caption"])
    stage = VerifyStage(cfg, vlm, reader, tier, random.Random(0))
    t, candidates = draw_group(random.Random(1), stage.split, 4, 0.0)
    assert candidates[0] == t.target and t.target not in candidates[1:]
    assert len(set(candidates)) == 4 and t.reference in candidates  # hard ones first
    # The per-change read-out: each change's last token, asked for when the target has it.
    describe, scenes = tier.describe, stage.scenes
    reference = describe(scenes[t.reference])
    differ = cfg.differ
    asked = set(
        description_changes(reference, describe(scenes[t.target]), differ=differ).split("; ")
    )
    for candidate in candidates:
        changes = description_changes(reference, describe(scenes[candidate]), differ=differ)
        ids, marks = stage.row(reference, t.caption, changes, asked)
        assert ids == vlm.codec.encode(
            VERIFY_PROMPT, description=reference, text=t.caption, changes=changes
        )
        listed = [] if changes == "nothing changed" else changes.split("; ")
        assert [ok for _, ok in marks] == [c in asked for c in listed]
        if candidate == t.target:
            assert marks and all(ok for _, ok in marks)
        for (at, _), change in zip(marks, listed, strict=True):
            # the change's text ends inside the marked token, and the next one starts after it
            assert change.endswith(vlm.tokenizer.decode(ids[at]).strip()[-1])
            assert vlm.tokenizer.decode(ids[: at + 1]).endswith(change)
    stage.cfg.asked_weight = 1.0
    loss = stage.loss()
    assert torch.isfinite(loss) and 0 <= stage.metrics["group_acc"] <= 1
    assert 0 <= stage.metrics["asked_acc"] <= 1
    loss.backward()
    grads = [p.grad for p in vlm.model.model.language_model.parameters()]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)


def test_mined_negatives_are_the_first_stages_near_misses_and_the_verify_stage_trains_on_them(
    hard_data, chain, tiny_checkpoint, tmp_path
):
    from cir_module.models import load_model
    from cir_module.vlm_training.mining import load_neighbours
    from cir_module.vlm_training.stages import draw_group

    out = tmp_path / "mined.json"
    argv = ["vlm", "mine", "--first-stage", str(tiny_checkpoint), "--data", hard_data]
    args = build_parser().parse_args([*argv, "--out", str(out), "--k", "3", "--chunk", "16"])
    args.func(args)
    mined = load_neighbours(out)
    split = EvalSplit.load(hard_data, "train")
    assert sorted(mined) == sorted(t.pairid for t in split.triplets)
    # Recomputed here: each chunk of 16 queries ranks the union of its image sets by the
    # cosine of the composed query and the image; the top 3 other than target and reference.
    model = load_model(tiny_checkpoint)
    for start in range(0, len(split.triplets), 16):
        part = split.triplets[start : start + 16]
        gallery = sorted({n for t in part for n in (*t.subset, t.target, t.reference)})
        images = model.embed_images([split.open(n) for n in gallery])
        queries = model.embed_composed(
            [split.open(t.reference) for t in part], [t.caption for t in part]
        )
        for t, row in zip(part, queries @ images.T, strict=True):
            ranked = [gallery[j] for j in np.argsort(-row, kind="stable")]
            expected = [n for n in ranked if n not in (t.target, t.reference)][:3]
            assert mined[t.pairid] == expected
    # The verify stage's groups: with the whole share mined, every negative is a mined one.
    rng = random.Random(3)
    for _ in range(20):
        t, candidates = draw_group(rng, split, 4, 0.0, mined, 1.0)
        assert candidates[0] == t.target and set(candidates[1:]) == set(mined[t.pairid])
    # A finished verify stage goes on, drawing them; the share needs the file.
    cfg = dict(stage="verify", data=hard_data, init=str(chain["verify"]), steps=1, **TINY)
    with pytest.raises(ValueError, match="--neighbours"):
        StageConfig(out=str(tmp_path / "v"), neighbour_negatives=0.5, **cfg)
    result = train_stage(
        StageConfig(out=str(tmp_path / "v"), neighbours=str(out), neighbour_negatives=0.5, **cfg)
    )
    assert result.complete and read_stage(tmp_path / "v")["config"]["neighbours"] == str(out)
