"""Energy: meters that read real counters where the platform has them, an importer for phone records, and an
estimate where nothing can be measured. Every figure carries `source`; an estimate is never a measurement.

    rapl          Linux powercap (Intel/AMD RAPL): cumulative microjoule counters per package, with wrap-around
    nvml          NVIDIA NVML through nvidia-ml-py: the GPU's cumulative energy in millijoules
    powermetrics  macOS `powermetrics` power samples (needs sudo), integrated over the run
    android       the JSON the Android demo records (battery current x voltage over the generation)
    estimate      bytes moved and operations per token x energy per byte/op of a named phone SoC profile
                  (soc_profiles.json: constants and their sources)
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

from runtimes.errors import UserError
from runtimes.files import read_json

PROFILES_PATH = Path(__file__).with_name("soc_profiles.json")
POWERCAP = Path("/sys/class/powercap")


class RaplMeter:
    """Sum of the top-level RAPL package domains (intel-rapl:N / amd-rapl:N, not their subzones)."""
    source = "rapl"

    def __init__(self, root: Path = POWERCAP):
        self.zones = sorted(p for p in Path(root).glob("*-rapl:*") if p.name.count(":") == 1
                            and (p / "energy_uj").is_file())
        if not self.zones:
            raise OSError(f"no RAPL domains under {root}")
        self.ranges = [int((z / "max_energy_range_uj").read_text()) for z in self.zones]
        self.start: list[int] = []

    def _read(self) -> list[int]:
        return [int((z / "energy_uj").read_text()) for z in self.zones]

    def begin(self) -> None:
        self.start = self._read()

    def end(self) -> float:
        """Joules since begin(); a counter that passed its max_energy_range_uj wrapped once."""
        total = 0
        for before, after, span in zip(self.start, self._read(), self.ranges):
            total += after - before if after >= before else after + span - before
        return total / 1e6


class NvmlMeter:
    """GPU energy from NVML's total-energy counter (Volta and newer), via nvidia-ml-py (`pynvml`)."""
    source = "nvml"

    def __init__(self, index: int = 0, nvml=None):
        if nvml is None:
            try:
                import pynvml as nvml
            except ImportError:
                raise OSError("nvidia-ml-py is not installed") from None
        self.nvml = nvml
        nvml.nvmlInit()
        self.handle = nvml.nvmlDeviceGetHandleByIndex(index)
        self.start = 0

    def begin(self) -> None:
        self.start = self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle)

    def end(self) -> float:
        # a 64-bit millijoule counter: it does not wrap in practice, but a driver reset restarts it at 0
        after = self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle)
        if after < self.start:
            raise OSError("the NVML energy counter went backwards (driver reset?)")
        return (after - self.start) / 1e3


POWER_LINE = re.compile(r"^(CPU|GPU|ANE|Combined) Power.*?:\s*([0-9.]+)\s*mW", re.MULTILINE)


def parse_powermetrics(text: str, interval_ms: float, rail: str = "Combined") -> float:
    """Joules from `powermetrics -i INTERVAL` output: each sample's power on `rail` x the interval."""
    samples = [float(mw) for name, mw in POWER_LINE.findall(text) if name == rail]
    if not samples:
        raise ValueError(f"no '{rail} Power' lines in powermetrics output")
    return sum(samples) * interval_ms / 1e6


class PowermetricsMeter:
    """macOS: runs `sudo -n powermetrics` alongside the measured code and integrates its samples."""
    source = "powermetrics"

    def __init__(self, interval_ms: int = 100):
        if sys.platform != "darwin":
            raise OSError("powermetrics is macOS only")
        self.interval_ms = interval_ms
        self.proc = None

    def begin(self) -> None:
        self.proc = subprocess.Popen(["sudo", "-n", "powermetrics", "--samplers", "cpu_power,gpu_power,ane_power",
                                      "-i", str(self.interval_ms)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        time.sleep(self.interval_ms / 1000)
        if self.proc.poll() is not None:
            raise OSError("powermetrics needs passwordless sudo (sudo -n powermetrics failed)")

    def end(self) -> float:
        self.proc.terminate()
        out, _ = self.proc.communicate(timeout=10)
        return parse_powermetrics(out, self.interval_ms)


def available_meter(kind: str = "auto"):
    """The meter to use on this machine for a CPU backend. kind auto: RAPL or powermetrics where readable, else None
    (energy is then estimated, labelled so); a named meter (rapl, powermetrics, nvml) that cannot be read here is a
    UserError, never a silent estimate."""
    candidates = {"rapl": RaplMeter, "powermetrics": PowermetricsMeter, "nvml": NvmlMeter}
    if kind == "auto":  # NVML counts a GPU our CPU backends do not use: only on request
        for name in ("rapl", "powermetrics"):
            try:
                return candidates[name]()
            except OSError:
                continue
        return None
    try:
        return candidates[kind]()
    except Exception as exc:  # OSError, PermissionError, and pynvml's own NVMLError types
        raise UserError(f"--energy {kind}: this machine has no readable {kind} meter ({exc}); use --energy auto or "
                        "none, which estimate energy and label it so") from None


def measured(joules: float, tokens: int, source: str, **extra) -> dict:
    return {"joules": joules, "tokens": tokens, "joules_per_token": joules / tokens, "source": source, **extra}


def import_android(path: str | Path) -> dict:
    """A phone record from the Android demo: {"device", "bundle", "tokens", "samples": [{"t_ms", "current_ua",
    "voltage_mv"}...]}. Current is signed as Android's BatteryManager reports it (negative while discharging on
    most phones). The record belongs to the bundle it names."""
    try:
        record = read_json(Path(path), "export one from the demo app")
        samples = sorted(record["samples"], key=lambda s: s["t_ms"])
        tokens, bundle = int(record["tokens"]), str(record["bundle"])
        for s in samples:
            float(s["current_ua"]), float(s["voltage_mv"])
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UserError(f"{path} is not an Android energy record ({exc}); export one from the demo app") from None
    if len(samples) < 2 or tokens < 1:
        raise UserError(f"{path} has fewer than 2 samples or no tokens")
    joules = 0.0
    for a, b in zip(samples, samples[1:]):  # trapezoids of |I| x V over each interval
        power_a = abs(a["current_ua"]) * a["voltage_mv"] * 1e-9
        power_b = abs(b["current_ua"]) * b["voltage_mv"] * 1e-9
        joules += (power_a + power_b) / 2 * (b["t_ms"] - a["t_ms"]) / 1e3
    return measured(joules, tokens, "android", device=record.get("device", "unknown"), bundle=bundle)


def load_profiles() -> dict:
    return json.loads(PROFILES_PATH.read_text())["profiles"]


def estimate(bytes_per_token: float, ops_per_token: float, tokens: int, profile: str) -> dict:
    """Energy a phone SoC would spend: DRAM traffic and arithmetic per token, from the named profile."""
    profiles = load_profiles()
    if profile not in profiles:
        raise UserError(f"unknown SoC profile {profile!r}; choose one of {', '.join(sorted(profiles))}")
    p = profiles[profile]
    per_token = bytes_per_token * p["dram_pj_per_byte"] * 1e-12 + ops_per_token * p["pj_per_op"] * 1e-12
    return {"joules": per_token * tokens, "tokens": tokens, "joules_per_token": per_token, "source": "estimate",
            "profile": profile, "bytes_per_token": bytes_per_token, "ops_per_token": ops_per_token}
