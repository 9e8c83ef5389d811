"""Gaussian noise samplers for DP-SGD and the paper's update noise.

A DP-SGD step of the 784-800-10 network draws 636 010 Gaussians. PyTorch's CPU ``normal_`` costs about
3.4 ns each on our machines (its Mersenne Twister uniforms alone are 2.9 ns), a third of a non-private
epoch at batch 200. Two samplers of the same distribution, N(0, std²) i.i.d.:

* ``"torch"``: ``Tensor.normal_`` on a seeded ``torch.Generator`` (CPU or CUDA).
* ``"native"``: a small C kernel (``native/gauss.c``: 64 lanes of xoshiro128++ in lock step, Box–Muller
  with float32 polynomial ln/sin/cos), about 0.5 ns per draw with AVX-512. It is compiled on first use
  with the system C compiler (``$CC``, else ``cc``) for this CPU (``-march=native``) into the cache
  directory, keyed by the source, compiler and CPU, and loaded with :mod:`ctypes`. Before it is used, a
  self-test checks its first draws against the same algorithm in float64 NumPy.

``"auto"`` (the default) takes ``"native"`` on CPU where the kernel builds and ``"torch"`` otherwise (CUDA,
no compiler, ``BIOPLAUSIBLE_NATIVE_NOISE=0``); the run summary records which one ran. Both samplers
checkpoint their state, so a run resumes on the same noise stream; a checkpoint names its sampler, and
resuming continues with the sampler the run started with.

Floating point: like every float32 sampler, the draws lie on a grid and their tails are cut where the
uniforms run out of bits: at ``sqrt(2·32·ln 2) ≈ 6.66`` standard deviations for the native sampler (all 32
bits of a word go into the radius) and ≈ 5.77 for PyTorch's 24-bit uniforms. The accountants assume an
exact Gaussian; neither sampler is hardened against floating-point attacks on that assumption (Mironov
2012), see ``docs/privacy.md``.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError

log = logging.getLogger(__name__)

SAMPLERS = ("auto", "torch", "native")
SOURCE = Path(__file__).with_name("native") / "gauss.c"
LANES = 64  # must match gauss.c
FLAGS = ["-O3", "-fno-math-errno", "-fPIC", "-shared"]


class NativeUnavailable(RuntimeError):
    """The native sampler cannot be built or failed its self-test here (the message says why)."""


_lib = None
_lib_error: str | None = None


def _cpu_id() -> str:
    """What ``-march=native`` depends on: the CPU model and its feature flags (Linux), else the platform."""
    try:
        with open("/proc/cpuinfo") as f:
            lines = [ln for ln in f if ln.startswith(("model name", "flags", "Features", "CPU part"))]
        return "".join(sorted(set(lines)))
    except OSError:
        return platform.processor() + platform.machine()


def _compile(cc: str, out: Path) -> None:
    """Compile ``gauss.c`` into ``out`` atomically (``-march=native`` first, portable flags if refused)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    errors = []
    for extra in (["-march=native"], []):
        fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=out.stem + ".", suffix=".tmp")
        os.close(fd)
        cmd = [cc, *FLAGS, *extra, str(SOURCE), "-o", tmp, "-lm"]
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        except (OSError, subprocess.TimeoutExpired) as e:
            os.unlink(tmp)
            raise NativeUnavailable(f"the C compiler {cc!r} could not run: {e}") from None
        if res.returncode == 0:
            os.replace(tmp, out)
            return
        os.unlink(tmp)
        errors.append(f"{' '.join(cmd)}: {res.stderr.strip()[-500:]}")
    raise NativeUnavailable("compiling the native noise kernel failed: " + " | ".join(errors))


def _build() -> ctypes.CDLL:
    if os.environ.get("BIOPLAUSIBLE_NATIVE_NOISE", "1").strip().lower() in ("0", "false", "no", "off"):
        raise NativeUnavailable("turned off by BIOPLAUSIBLE_NATIVE_NOISE=0")
    if os.name != "posix":
        raise NativeUnavailable(f"only built on POSIX systems (this is {os.name!r})")
    cc = os.environ.get("CC", "cc")
    cc_path = shutil.which(cc)
    if cc_path is None:
        raise NativeUnavailable(f"no C compiler: {cc!r} is not on PATH (set CC to one)")
    try:
        version = subprocess.run([cc_path, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired) as e:
        raise NativeUnavailable(f"the C compiler {cc_path!r} could not run: {e}") from None
    from ..data.store import cache_dir

    key = hashlib.sha256(
        b"\0".join([SOURCE.read_bytes(), cc_path.encode(), version.encode(), " ".join(FLAGS).encode(),
                    _cpu_id().encode(), platform.platform().encode()])
    ).hexdigest()[:16]
    path = cache_dir() / "native" / f"gauss-{key}.so"
    if not path.exists():
        _compile(cc_path, path)
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as e:
        raise NativeUnavailable(f"loading {path} failed: {e}") from None
    lib.bp_gauss_lanes.restype = ctypes.c_int
    lib.bp_gauss_seed.argtypes = [ctypes.c_void_p, ctypes.c_uint64]
    lib.bp_gauss_bits.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p]
    for fn in (lib.bp_gauss_fill, lib.bp_gauss_add):
        fn.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_float, ctypes.c_void_p]
    if lib.bp_gauss_lanes() != LANES:
        raise NativeUnavailable(f"{path}: built with {lib.bp_gauss_lanes()} lanes, expected {LANES}")
    _self_test(lib)
    return lib


def native_library() -> ctypes.CDLL:
    """The loaded kernel (built on first call); raises :class:`NativeUnavailable` with the reason."""
    global _lib, _lib_error
    if _lib is None and _lib_error is None:
        try:
            _lib = _build()
        except NativeUnavailable as e:
            _lib_error = str(e)
            log.info("native noise sampler unavailable: %s", e)
    if _lib is None:
        raise NativeUnavailable(_lib_error)
    return _lib


def native_available() -> bool:
    try:
        native_library()
        return True
    except NativeUnavailable:
        return False


# -- reference implementation (NumPy, float64): the same algorithm, for the self-test and the tests -------
def reference_seed(seed: int) -> np.ndarray:
    """gauss.c's ``bp_gauss_seed``: splitmix64 → 4 × LANES uint32 words."""
    mask = (1 << 64) - 1
    x = seed & mask
    state = np.zeros((4, LANES), dtype=np.uint32)
    for j in range(LANES):
        words = []
        for _ in range(2):
            x = (x + 0x9E3779B97F4A7C15) & mask
            z = x
            z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
            z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
            words.append(z ^ (z >> 31))
        a, b = words
        state[:, j] = [a & 0xFFFFFFFF, a >> 32, b & 0xFFFFFFFF, b >> 32]
        if a == 0 and b == 0:
            state[0, j] = 1
    return state


def reference_bits(state: np.ndarray, blocks: int) -> np.ndarray:
    """``blocks`` × LANES xoshiro128++ words (advances ``state`` in place), lane-major per block."""
    s0, s1, s2, s3 = (state[i].astype(np.uint64) for i in range(4))
    m = np.uint64(0xFFFFFFFF)

    def rotl(x, k):
        return ((x << np.uint64(k)) | (x >> np.uint64(32 - k))) & m

    out = np.empty((blocks, LANES), dtype=np.uint64)
    for i in range(blocks):
        out[i] = (rotl((s0 + s3) & m, 7) + s0) & m
        t = (s1 << np.uint64(9)) & m
        s2 ^= s0
        s3 ^= s1
        s1 ^= s2
        s0 ^= s3
        s2 ^= t
        s3 = rotl(s3, 11)
    for i, s in enumerate((s0, s1, s2, s3)):
        state[i] = s.astype(np.uint32)
    return out.reshape(-1).astype(np.uint32)


def reference_normals(state: np.ndarray, n: int) -> np.ndarray:
    """What ``bp_gauss_fill`` writes for ``n`` draws, computed exactly (float64 libm) from the same bits."""
    blocks = -(-n // (2 * LANES))
    bits = reference_bits(state, 2 * blocks).reshape(blocks, 2, LANES)
    # the kernel's u1 = (float(a) + 1/2) 2^-32 in float32 (exact near 0, where the tail is decided)
    u1 = ((bits[:, 0].astype(np.float32) + np.float32(0.5)) * np.float32(2.0**-32)).astype(np.float64)
    v = (bits[:, 1] >> 8).astype(np.float64) * 2.0**-24
    r = np.sqrt(-2.0 * np.log(u1))
    z = np.concatenate([r * np.cos(2 * np.pi * v), r * np.sin(2 * np.pi * v)], axis=1)
    return z.reshape(-1)[:n]


def _self_test(lib) -> None:
    """The compiled kernel must reproduce the float64 reference to float32 accuracy (guards against a
    miscompiling compiler or a mismatched build)."""
    n = 4 * 2 * LANES
    state = torch.zeros(4 * LANES, dtype=torch.int32)
    lib.bp_gauss_seed(state.data_ptr(), 12345)
    ref_state = reference_seed(12345)
    if not np.array_equal(state.numpy().view(np.uint32).reshape(4, LANES), ref_state):
        raise NativeUnavailable("self-test failed: the kernel's seeding differs from the reference")
    out = torch.empty(n)
    lib.bp_gauss_fill(out.data_ptr(), n, 1.0, state.data_ptr())
    ref = reference_normals(ref_state, n)
    err = np.abs(out.numpy().astype(np.float64) - ref).max()
    if not np.isfinite(err) or err > 1e-5:
        raise NativeUnavailable(f"self-test failed: draws differ from the float64 reference by {err:.3g}")


# -- samplers ---------------------------------------------------------------------------------------------
class TorchNoise:
    """N(0, std²) draws from ``Tensor.normal_`` on a seeded ``torch.Generator``."""

    kind = "torch"

    def __init__(self, seed: int, device="cpu"):
        self.gen = torch.Generator(device=device).manual_seed(seed)

    def fill_(self, t: torch.Tensor, std: float) -> torch.Tensor:
        return t.normal_(0.0, std, generator=self.gen)

    def like(self, t: torch.Tensor, std: float) -> torch.Tensor:
        return torch.randn(t.shape, generator=self.gen, dtype=t.dtype, device=t.device).mul_(std)

    def add_(self, t: torch.Tensor, std: float) -> torch.Tensor:
        """``t += std·ξ`` with the draws ``fill_`` would have made."""
        return t.add_(torch.randn(t.shape, generator=self.gen, dtype=t.dtype, device=t.device), alpha=std)

    def state(self) -> torch.Tensor:
        return self.gen.get_state()

    def load_state(self, s: torch.Tensor) -> None:
        self.gen.set_state(s)

    def clone(self) -> "TorchNoise":
        """A sampler that will draw exactly what this one draws next."""
        other = TorchNoise(0, self.gen.device)
        other.load_state(self.state())
        return other


class NativeNoise:
    """N(0, std²) draws from the compiled kernel (CPU; float32, other dtypes by conversion)."""

    kind = "native"

    def __init__(self, seed: int):
        self.lib = native_library()
        self._state = torch.zeros(4 * LANES, dtype=torch.int32)
        self.lib.bp_gauss_seed(self._state.data_ptr(), seed % 2**64)

    def fill_(self, t: torch.Tensor, std: float) -> torch.Tensor:
        if t.device.type != "cpu":
            raise UserError(f"noise_sampler: 'native' draws on the CPU, not on {t.device}; accepted: torch or auto")
        if t.dtype == torch.float32 and t.is_contiguous():
            self.lib.bp_gauss_fill(t.data_ptr(), t.numel(), float(std), self._state.data_ptr())
        else:  # unit draws in float32, scaled in the tensor's own precision
            tmp = torch.empty(t.shape, dtype=torch.float32)
            self.lib.bp_gauss_fill(tmp.data_ptr(), tmp.numel(), 1.0, self._state.data_ptr())
            t.copy_(tmp).mul_(std)
        return t

    def like(self, t: torch.Tensor, std: float) -> torch.Tensor:
        return self.fill_(torch.empty(t.shape, dtype=t.dtype, device=t.device), std)

    def add_(self, t: torch.Tensor, std: float) -> torch.Tensor:
        """``t += std·ξ`` with the draws ``fill_`` would have made (one pass, no temporary, for float32)."""
        if t.device.type == "cpu" and t.dtype == torch.float32 and t.is_contiguous():
            self.lib.bp_gauss_add(t.data_ptr(), t.numel(), float(std), self._state.data_ptr())
            return t
        return t.add_(self.like(t, 1.0), alpha=std)

    def state(self) -> torch.Tensor:
        return self._state.clone()

    def load_state(self, s: torch.Tensor) -> None:
        if s.dtype != torch.int32 or s.numel() != 4 * LANES:
            raise UserError(f"checkpoint: the native noise state has {s.numel()} {s.dtype} entries; "
                            f"expected {4 * LANES} int32 (a checkpoint from another version?)")
        self._state.copy_(s.reshape(-1))

    def clone(self) -> "NativeNoise":
        """A sampler that will draw exactly what this one draws next."""
        other = NativeNoise(0)
        other.load_state(self.state())
        return other


def check_sampler(kind: str) -> str:
    if kind not in SAMPLERS:
        raise UserError(f"noise_sampler: invalid value {kind!r}; accepted: {', '.join(SAMPLERS)}")
    return kind


def make_noise(kind: str, seed: int, device="cpu"):
    """The sampler ``kind`` (``auto``, ``torch`` or ``native``) for ``device``, seeded with ``seed``."""
    check_sampler(kind)
    device = torch.device(device)
    if kind == "torch" or (kind == "auto" and device.type != "cpu"):
        return TorchNoise(seed, device)
    if device.type != "cpu":
        raise UserError(f"noise_sampler: 'native' draws on the CPU, not on {device}; accepted: torch or auto")
    try:
        return NativeNoise(seed)
    except NativeUnavailable as e:
        if kind == "native":
            raise UserError(f"noise_sampler: 'native' is not available here ({e}); accepted: torch or auto") from None
        return TorchNoise(seed, device)
