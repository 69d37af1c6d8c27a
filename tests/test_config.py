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


@pytest.mark.parametrize("device, cpu_bf16, cuda_bf16, expected", [
    ("cpu", True, None, "bf16"),   # AMX / AVX512-BF16: native bf16
    ("cpu", False, None, "fp32"),  # no native bf16: autocast would be emulated and slower
    ("cuda", None, True, "bf16"),  # Ampere and newer
    ("cuda:1", None, False, "fp16"),  # T4 / V100: bf16 only through emulation, so fp16
    ("mps", None, None, "fp32"),
])
def test_auto_precision_follows_the_hardware(monkeypatch, device, cpu_bf16, cuda_bf16, expected):
    monkeypatch.delenv(config.PRECISION_ENV, raising=False)
    monkeypatch.setattr(config, "CPU_BF16_BY_DEFAULT", True)
    monkeypatch.setattr(config, "cpu_has_fast_bf16", lambda: cpu_bf16)
    monkeypatch.setattr(config, "cuda_has_fast_bf16", lambda: cuda_bf16)
    assert config.pick_precision(device) == expected
    flags = config.mixed_precision(device)
    assert flags == ({"bf16": True} if expected == "bf16" else {"fp16": True} if expected == "fp16" else {})


def test_cpu_default_stays_fp32_until_the_quality_check_turns_bf16_on(monkeypatch):
    monkeypatch.delenv(config.PRECISION_ENV, raising=False)
    monkeypatch.setattr(config, "cpu_has_fast_bf16", lambda: True)
    monkeypatch.setattr(config, "CPU_BF16_BY_DEFAULT", False)
    assert config.pick_precision("cpu") == "fp32" and config.pick_precision("cpu", "bf16") == "bf16"


def test_cuda_bf16_check_excludes_emulation(monkeypatch):
    seen = {}

    def is_bf16_supported(including_emulation=True):
        seen["including_emulation"] = including_emulation
        return including_emulation  # a T4: True only through emulation
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    assert config.cuda_has_fast_bf16() is False and seen == {"including_emulation": False}


def test_precision_override_and_bad_values(monkeypatch):
    monkeypatch.setenv(config.PRECISION_ENV, "fp32")
    assert config.pick_precision("cpu") == "fp32" and config.mixed_precision("cpu") == {}
    assert config.pick_precision("cpu", "bf16") == "bf16"  # the argument wins over the variable
    monkeypatch.setenv(config.PRECISION_ENV, "half")
    with pytest.raises(ValueError, match="Unknown precision 'half'.*fp32, bf16, fp16"):
        config.pick_precision("cpu")
    with pytest.raises(ValueError, match="fp16' needs a CUDA GPU"):
        config.pick_precision("cpu", "fp16")


def test_this_cpu_probe_matches_torch():
    expected = torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported()
    assert config.cpu_has_fast_bf16() == expected


def test_seed_everything_repeats_random_draws():
    config.seed_everything(3)
    a = torch.rand(4)
    config.seed_everything(3)
    assert torch.equal(a, torch.rand(4))


def test_setup_reports_scale_and_device():
    s = config.setup(scale="smoke", device="cpu", seed=1)
    assert s.scale.name == "smoke" and s.device == "cpu" and s.seed == 1
    assert "smoke" in repr(s)
