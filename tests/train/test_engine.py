"""The training loop on a tiny model and synthetic data: temperature, resume, crash safety, metrics, extra loss
terms."""

from __future__ import annotations

import csv
import math

import pytest
import torch

from featherface.config import ConfigError
from featherface.models.checkpoints import load_checkpoint
from featherface.models.loading import build_model_from_checkpoint
from featherface.models.registry import create_model
from featherface.nn.odconv import ODConv2d
from featherface.train.builders import build_model
from featherface.train.engine import Trainer
from featherface.train.faults import NonFiniteLossError
from featherface.train.loss import ExtraLoss
from featherface.train.metrics import BASE_COLUMNS, entropy_columns
from tests.train import SyntheticFaces, restore_threads, tiny_config  # noqa: F401 (autouse fixture)


def _fit(cfg, out, dataset=None, resume=False, on_step=None, model=None, extra_losses=()):
    dataset = dataset if dataset is not None else SyntheticFaces(8, cfg.image_size)
    return Trainer(cfg, out, dataset, device="cpu", on_step=on_step, model=model,
                   extra_losses=extra_losses).fit(resume=resume)


def _read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


# ------------------------------------------------------------------------------------------ temperature
def test_temperature_schedule_reaches_every_odconv_module(tmp_path):
    cfg = tiny_config(model="featherface_odconv", epochs=2, temperature_start=30.0, temperature_end=1.0,
                      temperature_epochs=10, temperature_per="step")
    seen = []
    model = build_model(cfg)
    modules = [m for m in model.modules() if isinstance(m, ODConv2d)]
    assert len(modules) == 6

    def on_step(info):
        seen.append((info.temperature, {m.temperature for m in modules}))

    _fit(cfg, tmp_path, on_step=on_step, model=model)
    # 2 steps per epoch; a 2-epoch run reaches T = 1 at half the run (epoch 1), not at temperature_epochs = 10
    expected = [30 - 29 * min((s / 2) / 1, 1.0) for s in range(4)]  # 30, 15.5, 1, 1
    assert [t for t, _ in seen] == pytest.approx(expected)
    for t, module_values in seen:
        assert len(module_values) == 1 and module_values.pop() == pytest.approx(t)
    rows = _read_csv(tmp_path / "metrics.csv")
    assert [float(r["temperature"]) for r in rows] == pytest.approx([expected[1], expected[3]])
    final = build_model_from_checkpoint(tmp_path / "final.pt")
    # the saved model is at the end temperature (the run ended past the schedule), not half-way down it
    assert [m.temperature for m in final.modules() if isinstance(m, ODConv2d)] == pytest.approx([1.0] * 6)


def test_temperature_per_epoch(tmp_path):
    cfg = tiny_config(model="featherface_odconv", epochs=2, temperature_per="epoch", temperature_epochs=4,
                      probe_images=0)
    seen = []
    _fit(cfg, tmp_path, on_step=lambda i: seen.append(i.temperature))
    # whole epochs; temperature_epochs = 4 is cut to half the 2-epoch run, so T reaches 1 at epoch 1
    assert seen == pytest.approx([30.0, 30.0, 1.0, 1.0])


# ------------------------------------------------------------------------------------------ metrics and files
def test_metrics_csv_and_checkpoints(tmp_path):
    cfg = tiny_config(model="featherface_odconv", epochs=2)
    _fit(cfg, tmp_path)
    rows = _read_csv(tmp_path / "metrics.csv")
    model = build_model(cfg)
    with open(tmp_path / "metrics.csv") as fh:
        header = fh.readline().strip().split(",")
    assert header == [*BASE_COLUMNS, *entropy_columns(model)]
    assert [int(r["epoch"]) for r in rows] == [1, 2] and [int(r["step"]) for r in rows] == [2, 4]
    assert all(int(r["images"]) == 8 for r in rows)
    for r in rows:
        assert float(r["images_per_s"]) > 0 and float(r["wall_s"]) >= float(r["epoch_s"]) > 0
        assert float(r["lr_attention"]) == pytest.approx(2 * float(r["lr"]))
        assert float(r["loss"]) == pytest.approx(2 * float(r["loc"]) + float(r["cls"]) + float(r["landm"]), rel=1e-6)
        for col in entropy_columns(model):
            assert 0.0 <= float(r[col]) <= math.log(2) + 1e-6
    last = load_checkpoint(tmp_path / "last.pt")
    assert last["kind"] == "train_state" and last["epoch"] == 2 and last["global_step"] == 4
    assert last["train_config"]["model"] == "featherface_odconv"
    assert set(last["rng"]) >= {"torch", "numpy", "python", "loader"}
    assert last["data"] == {"augment_seed": 0, "shuffle_seed": 0, "next_epoch": 2, "world_size": 1}
    assert "state" in last["optimizer"] and last["scheduler"] == {"global_step": 4, "steps_per_epoch": 2}
    final = build_model_from_checkpoint(tmp_path / "final.pt")
    trained = build_model_from_checkpoint(tmp_path / "last.pt")
    assert all(torch.equal(a, b) for a, b in zip(final.state_dict().values(), trained.state_dict().values()))


def test_model_without_odconv_has_base_columns_only(tmp_path):
    _fit(tiny_config(epochs=1), tmp_path)
    with open(tmp_path / "metrics.csv") as fh:
        assert fh.readline().strip().split(",") == list(BASE_COLUMNS)
    assert _read_csv(tmp_path / "metrics.csv")[0]["temperature"] == ""


# ------------------------------------------------------------------------------------------ extra loss terms
class ConstantTerm:
    """An extra loss term of constant value ``c`` (no gradient), recording what it is called with."""

    def __init__(self, c: float) -> None:
        self.c = c
        self.calls: list[tuple[tuple, int]] = []

    def __call__(self, images, outputs, targets):
        self.calls.append((tuple(images.shape), len(targets)))
        assert len(outputs) == 3 and all("boxes" in t for t in targets)
        return {"const": torch.tensor(self.c)}


def test_an_extra_loss_term_adds_to_the_step_loss_and_gets_a_metrics_column(tmp_path):
    cfg = tiny_config(epochs=2, probe_images=0)
    plain: list = []
    _fit(cfg, tmp_path / "plain", on_step=plain.append)
    term = ConstantTerm(0.25)
    assert isinstance(term, ExtraLoss)
    steps: list = []
    _fit(cfg, tmp_path / "extra", on_step=steps.append, extra_losses=[term])
    assert term.calls == [((4, 3, 64, 64), 4)] * 4  # 2 epochs x 2 steps of 4 images
    # a constant has no gradient: the same weights, so each step's loss is exactly c more
    assert [s.loss for s in steps] == pytest.approx([p.loss + 0.25 for p in plain], rel=1e-6, abs=1e-6)
    assert [s.loc for s in steps] == [p.loc for p in plain] and [s.cls for s in steps] == [p.cls for p in plain]
    assert all(s.extra == {"const": 0.25} for s in steps) and all(p.extra == {} for p in plain)
    rows, plain_rows = _read_csv(tmp_path / "extra" / "metrics.csv"), _read_csv(tmp_path / "plain" / "metrics.csv")
    assert list(rows[0])[-1] == "const" and "const" not in plain_rows[0]
    assert [float(r["const"]) for r in rows] == [0.25, 0.25]
    for row, plain_row in zip(rows, plain_rows):
        assert float(row["loss"]) == pytest.approx(float(plain_row["loss"]) + 0.25, rel=1e-6)


def test_an_extra_loss_term_is_back_propagated(tmp_path):
    cfg = tiny_config(epochs=1, probe_images=0)

    def squared_logits(images, outputs, targets):
        return {"logits2": outputs[1].float().pow(2).mean()}

    plain: list = []
    _fit(cfg, tmp_path / "plain", on_step=plain.append)
    steps: list = []
    _fit(cfg, tmp_path / "extra", on_step=steps.append, extra_losses=[squared_logits])
    assert steps[0].loss == pytest.approx(plain[0].loss + steps[0].extra["logits2"], rel=1e-6)
    assert steps[0].grad_norm != plain[0].grad_norm  # the term's gradient joins the ground-truth one
    assert steps[1].loc != plain[1].loc  # so the second step starts from other weights


# ------------------------------------------------------------------------------------------ resume
class Interrupt(Exception):
    pass


def test_resume_reproduces_an_uninterrupted_run_exactly(tmp_path):
    cfg = tiny_config(model="featherface_odconv", epochs=3, momentum=0.9, warmup_epochs=1.0, grad_clip=5.0)
    straight: list[float] = []
    _fit(cfg, tmp_path / "a", on_step=lambda i: straight.append(i.loss))
    assert len(straight) == 6

    first: list[float] = []

    def kill_in_epoch_2(info):
        if info.global_step == 3:  # second step of epoch 2: that epoch is lost
            raise Interrupt
        first.append(info.loss)

    with pytest.raises(Interrupt):
        _fit(cfg, tmp_path / "b", on_step=kill_in_epoch_2)
    assert load_checkpoint(tmp_path / "b" / "last.pt")["epoch"] == 1
    resumed: list[float] = []
    _fit(cfg, tmp_path / "b", resume=True, on_step=lambda i: resumed.append(i.loss))
    assert len(resumed) == 4  # epochs 2 and 3
    assert first[:2] + resumed == straight  # bit-identical losses
    a = load_checkpoint(tmp_path / "a" / "final.pt")["model"]
    b = load_checkpoint(tmp_path / "b" / "final.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    rows = _read_csv(tmp_path / "b" / "metrics.csv")
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    assert [r["loss"] for r in rows] == [r["loss"] for r in _read_csv(tmp_path / "a" / "metrics.csv")]


def test_weight_average_is_written_as_final_and_resumes_exactly(tmp_path):
    cfg = tiny_config(model="featherface_odconv", epochs=3, ema_decay=0.5, probe_images=0)
    _fit(cfg, tmp_path / "a")
    final = load_checkpoint(tmp_path / "a" / "final.pt")
    last = load_checkpoint(tmp_path / "a" / "last.pt")
    assert last["ema"]["updates"] == 6
    average, trained = final["model"], last["model"]
    assert all(torch.equal(average[k], last["ema"]["model"][k]) for k in average)
    moved = [k for k in average if average[k].is_floating_point() and not torch.equal(average[k], trained[k])]
    assert moved  # final.pt holds the average, not the last weights
    assert all(torch.equal(average[k], trained[k]) for k in average if k.endswith("temperature"))

    def kill_in_epoch_3(info):
        if info.global_step == 4:
            raise Interrupt

    with pytest.raises(Interrupt):
        _fit(cfg, tmp_path / "b", on_step=kill_in_epoch_3)
    _fit(cfg, tmp_path / "b", resume=True)
    resumed = load_checkpoint(tmp_path / "b" / "final.pt")["model"]
    assert all(torch.equal(average[k], resumed[k]) for k in average)


def test_resume_refuses_changed_settings(tmp_path):
    cfg = tiny_config(epochs=2, probe_images=0)
    _fit(cfg, tmp_path)
    with pytest.raises(ConfigError, match=r"train\.lr: 0\.01 -> 0\.02") as info:
        _fit(tiny_config(epochs=2, lr=0.02, probe_images=0), tmp_path, resume=True)
    assert "pass --overwrite without --resume to start afresh" in str(info.value)  # the CLI's way, as elsewhere


def test_resume_without_checkpoint_starts_afresh_and_done_run_only_rewrites_final(tmp_path):
    cfg = tiny_config(epochs=1, probe_images=0)
    steps = []
    _fit(cfg, tmp_path, resume=True, on_step=steps.append)
    assert len(steps) == 2
    (tmp_path / "final.pt").unlink()
    steps.clear()
    _fit(cfg, tmp_path, resume=True, on_step=steps.append)
    assert steps == [] and (tmp_path / "final.pt").is_file()


# ------------------------------------------------------------------------------------------ crash safety
def test_crash_while_saving_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    cfg = tiny_config(epochs=2, probe_images=0)
    real_save = torch.save

    def broken_save(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise OSError("simulated crash during save")

    def arm(info):
        if info.global_step == 2:  # in epoch 2: the next save fails half-way
            monkeypatch.setattr(torch, "save", broken_save)

    with pytest.raises(OSError, match="simulated crash"):
        _fit(cfg, tmp_path, on_step=arm)
    monkeypatch.setattr(torch, "save", real_save)
    last = load_checkpoint(tmp_path / "last.pt")
    assert last["epoch"] == 1
    assert not list(tmp_path.glob(".last.pt.*"))  # the temporary file was removed
    assert not (tmp_path / "final.pt").exists()
    steps = []
    _fit(cfg, tmp_path, resume=True, on_step=steps.append)
    assert [s.epoch for s in steps] == [1, 1]


# ------------------------------------------------------------------------------------------ non-finite loss
class NaNLandmarksFrom(SyntheticFaces):
    """Landmark targets become NaN from epoch `start` on (only the landmark term is hit)."""

    def __init__(self, start: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.start = start

    def __getitem__(self, index):
        image, target = super().__getitem__(index)
        if self.epoch >= self.start:
            target["landmarks"] = torch.full_like(target["landmarks"], float("nan"))
        return image, target


def test_non_finite_loss_stops_with_a_clear_message(tmp_path):
    cfg = tiny_config(epochs=3, probe_images=0)
    with pytest.raises(NonFiniteLossError) as info:
        _fit(cfg, tmp_path, dataset=NaNLandmarksFrom(1, n=8, size=64))
    message = str(info.value)
    assert "epoch 2/3, step 1/2" in message and "non-finite term(s): landm" in message
    assert info.value.epoch == 2 and info.value.step == 1
    assert math.isnan(info.value.terms["landm"]) and math.isfinite(info.value.terms["cls"])
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 1  # the last good epoch is kept
    assert len(_read_csv(tmp_path / "metrics.csv")) == 1


def test_too_few_images_for_one_batch(tmp_path):
    with pytest.raises(ValueError, match="fewer than one batch"):
        _fit(tiny_config(batch_size=16), tmp_path)


# ------------------------------------------------------------------------------------------ clipping
def test_gradient_clipping_bounds_the_update(tmp_path):
    cfg = tiny_config(epochs=1, momentum=0.0, weight_decay=0.0, lr=0.01, grad_clip=0.5, probe_images=0)
    model = build_model(cfg)
    before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    norms = []
    _fit(cfg, tmp_path, dataset=SyntheticFaces(4, 64), model=model, on_step=lambda i: norms.append(i.grad_norm))
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert len(norms) == 1 and norms[0] > 0.5  # the reported norm is the one before clipping
    assert float((before - after).norm()) == pytest.approx(0.01 * 0.5, rel=1e-4)  # plain SGD: lr * clipped norm


# ------------------------------------------------------------------------------------------ it learns
def test_loss_falls_on_a_tiny_run(tmp_path):
    cfg = tiny_config(epochs=15, image_size=128, lr=0.02, warmup_epochs=1.0, probe_images=0)
    losses: list[float] = []
    _fit(cfg, tmp_path, dataset=SyntheticFaces(8, 128), on_step=lambda i: losses.append(i.loss))
    assert len(losses) == 30
    first, last = sum(losses[:4]) / 4, sum(losses[-4:]) / 4
    assert last < 0.7 * first, (first, last)


# ------------------------------------------------------------------------------------------ CUDA only
@pytest.mark.skipif(not torch.cuda.is_available(), reason="mixed precision runs on CUDA only")
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_mixed_precision_on_cuda(tmp_path, dtype):
    cfg = tiny_config(model="featherface_odconv", epochs=2, amp=True, amp_dtype=dtype, device="cuda")
    losses: list[float] = []
    trainer = Trainer(cfg, tmp_path, SyntheticFaces(8, 64), on_step=lambda i: losses.append(i.loss))
    assert trainer.device.type == "cuda"
    trainer.fit()
    assert len(losses) == 4 and all(math.isfinite(v) for v in losses)
    last = load_checkpoint(tmp_path / "last.pt")
    assert (last["scaler"] is not None) == (dtype == "float16")
    resumed: list[float] = []
    Trainer(tiny_config(model="featherface_odconv", epochs=3, amp=True, amp_dtype=dtype, device="cuda"),
            tmp_path, SyntheticFaces(8, 64), on_step=lambda i: resumed.append(i.loss)).fit(resume=True)
    assert len(resumed) == 2


# ------------------------------------------------------------------------------------------ teacher and init
def test_teacher_init_checkpoint_and_trainable_prefixes(tmp_path):
    from featherface.models.checkpoints import save_checkpoint

    torch.manual_seed(0)
    teacher = create_model("featherface_v1", width=16, bifpn_repeats=1)
    teacher_path = save_checkpoint(tmp_path / "teacher.pt", teacher)
    cfg = tiny_config(model="featherface_odconv_ssh", init="checkpoint", init_weights=str(teacher_path),
                      teacher_weights=str(teacher_path), trainable=("context",), gt_weight=0.0,
                      distill_feature=1.0, distill_score_threshold=0.0, epochs=1, probe_images=0)
    trainer = Trainer(cfg, tmp_path / "run", SyntheticFaces(8, cfg.image_size), device="cpu")
    trainer.fit()
    student = build_model_from_checkpoint(tmp_path / "run" / "final.pt")
    start = build_model(cfg)  # the transferred initial weights
    changed = {k for k, v in student.state_dict().items() if not torch.equal(v, start.state_dict()[k])}
    assert changed and all(k.startswith("context.") for k in changed)  # BN statistics outside too stay put
    assert any("conv.weight" in k for k in changed)
    rows = _read_csv(tmp_path / "run" / "metrics.csv")
    assert float(rows[0]["distill"]) > 0
    assert float(rows[0]["loss"]) == pytest.approx(float(rows[0]["distill"]))  # gt_weight 0


def test_teacher_and_init_settings_are_checked():
    with pytest.raises(ConfigError, match="train.gt_weight"):
        tiny_config(gt_weight=0.0)
    with pytest.raises(ConfigError, match="train.init_weights"):
        tiny_config(init="checkpoint")
    with pytest.raises(ConfigError, match="train.distill_features"):
        tiny_config(distill_features=("s9",))
    with pytest.raises(ConfigError, match="train.crop_scales"):
        tiny_config(crop_scales=(0.5, 4.5))
    with pytest.raises(ConfigError, match="train.trainable"):
        Trainer(tiny_config(trainable=("nothing",)), "unused", SyntheticFaces(4, 64), device="cpu").fit()
