"""Scale, device and seed: one place decides them (notebook 00 explains them)."""
import pytest
import torch

from helpers import config


def test_scales_grow_from_smoke_to_full():
    smoke, workshop, full = (config.get_scale(n) for n in ("smoke", "workshop", "full"))
    assert smoke.train_size < workshop.train_size
    assert full.train_size is None  # everything
    assert len(smoke.seeds) == 1 and len(workshop.seeds) >= 3


def test_scale_from_environment(monkeypatch):
    monkeypatch.setenv("WORKSHOP_SCALE", "Workshop")
    assert config.get_scale().name == "workshop"


def test_unknown_scale_names_the_choices(monkeypatch):
    monkeypatch.setenv("WORKSHOP_SCALE", "huge")
    with pytest.raises(ValueError, match="smoke, workshop, full"):
        config.get_scale()


def test_device_override_and_errors(monkeypatch):
    assert config.pick_device("cpu") == "cpu"
    monkeypatch.setenv("WORKSHOP_DEVICE", "cpu")
    assert config.pick_device() == "cpu"
    with pytest.raises(ValueError, match="Unknown device"):
        config.pick_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            config.pick_device("cuda")


def test_mixed_precision_only_on_cuda():
    assert config.mixed_precision("cpu") == {}


def test_seed_everything_repeats_random_draws():
    config.seed_everything(3)
    a = torch.rand(4)
    config.seed_everything(3)
    assert torch.equal(a, torch.rand(4))


def test_setup_reports_scale_and_device():
    s = config.setup(scale="smoke", device="cpu", seed=1)
    assert s.scale.name == "smoke" and s.device == "cpu" and s.seed == 1
    assert "smoke" in repr(s)
