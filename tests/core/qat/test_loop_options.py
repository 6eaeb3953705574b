"""The built-in loop's training options: accumulation, warm-up and step schedules, clipping,
evaluation with the best weights kept, early stopping, curves, streamed data, frozen BN."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.errors import ConfigError
from core.qat import Shard, ShardManifest, ShardPlan, StreamSource, list_checkpoints, lr_at, qat
from tests.core.qat_scenarios import build_sim


def _weights(sim) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in sim.model.state_dict().items()}


def test_accumulating_two_half_batches_equals_one_full_batch():
    runs = []
    for batch, accumulate in ((16, 1), (8, 2)):
        sim, x, labels = build_sim(bn=False)
        result = qat(sim, x, labels=labels, epochs=1, lr=1e-2, batch_size=batch, accumulate_steps=accumulate,
                     optimizer="sgd", finish=False)  # fmt: skip
        assert result.steps == 96 // 16
        runs.append(_weights(sim))
    for key in runs[0]:
        torch.testing.assert_close(runs[0][key], runs[1][key], rtol=1e-4, atol=1e-6, msg=key)


def test_warm_up_then_step_decay_and_the_curves_record_them():
    assert [lr_at("step", 1.0, s, 10, warmup_steps=2, step_size=4, gamma=0.5) for s in range(10)] == [
        0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.5,
    ]  # fmt: skip
    sim, x, labels = build_sim(bn=False)
    result = qat(sim, x, labels=labels, epochs=2, lr=1e-2, batch_size=16, lr_schedule="step", warmup_steps=2,
                 lr_step_size=4, lr_gamma=0.5, log_every=2, clip_grad_norm=1.0, optimizer="adamw",
                 weight_decay=1e-4)  # fmt: skip
    assert result.curves["step"] == [2, 4, 6, 8, 10, 12]
    assert result.curves["lr"] == [1e-2, 1e-2, 1e-2, 5e-3, 5e-3, 2.5e-3]
    assert all(np.isfinite(result.curves["loss"]))
    with pytest.raises(ConfigError, match="lr_gamma"):
        qat(sim, x, labels=labels, lr_schedule="step", lr_gamma=2.0)
    with pytest.raises(ConfigError, match="clip_grad_norm"):
        qat(sim, x, labels=labels, clip_grad_norm=0.0)


def test_best_evaluated_weights_are_kept_and_early_stopping_survives_a_resume(tmp_path):
    """Given an evaluation that peaks at the 2nd of its calls, When patience is 2, Then training stops
    at the 4th evaluation, the 2nd's weights are restored, and a resume from the step-3 checkpoint
    (tracker state and best weights inside it) stops at the same step with the same weights."""
    scores = iter([0.1, 0.9, 0.5, 0.4, 0.3, 0.2])
    sim, x, labels = build_sim(bn=False)
    snapshot = {}

    def evaluate(s) -> float:
        value = next(scores)
        if value == 0.9:
            snapshot.update(_weights(s))
        return value

    ckpt = tmp_path / "ckpt"
    result = qat(sim, x, labels=labels, epochs=3, lr=1e-2, batch_size=16, eval_fn=evaluate, eval_every=1,
                 early_stopping_patience=2, keep_best=True, finish=False, checkpoint_dir=str(ckpt),
                 checkpoint_every=3)  # fmt: skip
    assert result.best_metric == 0.9 and result.best_step == 2 and result.stopped_early_at == 4
    assert result.curves["eval_metric"] == [0.1, 0.9, 0.5, 0.4]
    for key, value in snapshot.items():
        torch.testing.assert_close(sim.model.state_dict()[key], value, msg=key)
    # Resume from step 3 (drop the early-stop checkpoint): the evaluation after it says 0.4 again.
    final = list_checkpoints(ckpt)
    assert [p.name for p in final] == ["step-00000003", "step-00000004"]
    import shutil

    shutil.rmtree(final[-1])
    scores = iter([0.4])
    sim2, _, _ = build_sim(bn=False)
    again = qat(sim2, x, labels=labels, epochs=3, lr=1e-2, batch_size=16, eval_fn=lambda s: next(scores),
                eval_every=1, early_stopping_patience=2, keep_best=True, finish=False,
                checkpoint_dir=str(ckpt), checkpoint_every=3)  # fmt: skip
    assert again.resumed_from_step == 3 and again.stopped_early_at == 4 and again.best_step == 2
    for key, value in snapshot.items():
        torch.testing.assert_close(sim2.model.state_dict()[key], value, msg=key)


def test_streamed_shards_train_like_the_same_batches_in_memory_and_regression_targets_use_mse():
    """A one-shard, one-lane stream whose buffer holds everything equals the in-memory run that sees
    the same sample order; float labels select MSE."""
    sim, x, labels = build_sim(bn=False)
    arrays = {"a": ([x[:48].numpy()], labels[:48].numpy()), "b": ([x[48:].numpy()], labels[48:].numpy())}
    plan = ShardPlan(ShardManifest((Shard("a", 48), Shard("b", 48))), lanes=1, lane_batch=16, buffer=8)
    stream = StreamSource(plan, lambda s: arrays[s.locator], epochs=1)
    result = qat(sim, stream, epochs=1, lr=1e-2, freeze_bn=True, finish=False)
    assert result.loss_name == "cross_entropy" and result.steps == 6 and result.samples_per_second > 0
    sim_f, _, _ = build_sim(bn=False)
    floats = {k: (v[0], v[1].astype(np.float32)[:, None].repeat(4, 1)) for k, v in arrays.items()}
    reg = qat(sim_f, StreamSource(plan, lambda s: floats[s.locator], epochs=1), lr=1e-3)
    assert reg.loss_name == "mse"


def test_frozen_batch_norm_keeps_its_statistics_while_training():
    sim, x, labels = build_sim(bn=True)
    before = sim.model.get_submodule("1").running_mean.clone()
    qat(sim, x, labels=labels, epochs=1, lr=1e-2, batch_size=16, freeze_bn=True, finish=False)
    torch.testing.assert_close(sim.model.get_submodule("1").running_mean, before)
