"""Does the suite have teeth? Break one formula at a time in a copy of the library and
check that a test fails. Not collected by pytest (slow: ~1 min a mutation); run with
`make mutation` or `.venv/bin/python tests/mutation_check.py`."""

import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

SRC = pathlib.Path(__file__).resolve().parents[1]
MUTS = [
    (
        "forward.py",
        "(1.0 - beta).sqrt() * x_prev",
        "(1.0 - beta) * x_prev",
        "q_step: drop sqrt(1-beta)",
    ),
    (
        "schedules.py",
        '"posterior_mean_coef2": (1.0 - alpha_bars_prev) * alphas.sqrt()',
        '"posterior_mean_coef2": (1.0 - alpha_bars_prev) * alphas',
        "posterior coef2: drop sqrt(alpha_t)",
    ),
    (
        "schedules.py",
        "posterior_variance = b * (1.0 - alpha_bars_prev) / (1.0 - alpha_bars)",
        "posterior_variance = b * (1.0 - alpha_bars_prev)",
        "posterior variance: drop 1/(1-ab_t)",
    ),
    (
        "reverse.py",
        "mean = (x_t - coef * pred_eps)",
        "mean = (x_t + coef * pred_eps)",
        "Eq. 11 mean: sign of eps",
    ),
    (
        "reverse.py",
        "return (extract(schedule.sqrt_recip_alpha_bars, t, x_t) * x_t\n"
        "            - extract(schedule.sqrt_recipm1_alpha_bars, t, x_t) * eps)",
        "return (extract(schedule.sqrt_recip_alpha_bars, t, x_t) * x_t\n"
        "            + extract(schedule.sqrt_recipm1_alpha_bars, t, x_t) * eps)",
        "x0 from eps: sign",
    ),
    (
        "samplers.py",
        "(one_minus_ab_t - one_minus_ab_prev) / ab_prev).clamp(min=0).sqrt()",
        "(one_minus_ab_t - one_minus_ab_prev) / ab_prev).clamp(min=0)",
        "DDIM sigma: drop sqrt",
    ),
    (
        "gaussians.py",
        "(mean1 - mean2) ** 2 * torch.exp(-logvar2)",
        "(mean1 - mean2) ** 2 * torch.exp(logvar2)",
        "normal_kl: precision vs variance",
    ),
    (
        "losses.py",
        "return mean_flat(kl) / math.log(2.0)",
        "return mean_flat(kl)",
        "L_T: nats not bits",
    ),
    (
        "oracle.py",
        "return -s.reshape(-1, *([1] * (x_t.ndim - 1))) * self.score(x_t, t)",
        "return s.reshape(-1, *([1] * (x_t.ndim - 1))) * self.score(x_t, t)",
        "oracle eps: sign of score",
    ),
    (
        "samplers.py",
        "nonzero * (0.5 * p.log_variance).exp() * noise",
        "nonzero * p.log_variance.exp() * noise",
        "p_sample: variance instead of std",
    ),
    (
        "schedules.py",
        "f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2",
        "f = torch.cos((steps + s) / (1 + s) * math.pi / 2)",
        "cosine schedule: cos not cos^2",
    ),
    (
        "gaussians.py",
        "half_bin = 1.0 / (num_bins - 1)",
        "half_bin = 2.0 / (num_bins - 1)",
        "decoder: bin twice too wide",
    ),
    (
        "schedules.py",
        "alpha_bars = torch.cumprod(alphas, dim=0)",
        "alpha_bars = torch.cumprod(alphas, dim=0) ** 1.01",
        "alpha_bar: slightly off",
    ),
    (
        "reverse.py",
        "return (extract(schedule.sqrt_alpha_bars, t, x0) * eps\n"
        "            - extract(schedule.sqrt_one_minus_alpha_bars, t, x0) * x0)",
        "return (extract(schedule.sqrt_one_minus_alpha_bars, t, x0) * eps\n"
        "            - extract(schedule.sqrt_alpha_bars, t, x0) * x0)",
        "v target: coefficients swapped",
    ),
    (
        "samplers.py",
        "x_prev = ab_prev.sqrt() * pred_x0 + direction",
        "x_prev = ab_prev * pred_x0 + direction",
        "DDIM: ab_prev instead of sqrt",
    ),
    (
        "forward.py",
        "extract(schedule.sqrt_one_minus_alpha_bars, t, x0), noise)",
        "extract(schedule.sqrt_one_minus_alpha_bars, t, x0) ** 2, noise)",
        "q_sample: variance as std",
    ),
]
TESTS = [
    "tests/test_schedules.py",
    "tests/test_forward.py",
    "tests/test_reverse.py",
    "tests/test_losses.py",
    "tests/test_samplers.py",
    "tests/test_oracle.py",
]
results = []
for fname, old, new, label in MUTS:
    work = pathlib.Path(tempfile.mkdtemp(prefix="mutation-"))
    shutil.copytree(
        SRC / "diffusion_lib", work / "diffusion_lib", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copytree(SRC / "tests", work / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    p = work / "diffusion_lib" / fname
    text = p.read_text()
    assert text.count(old) == 1, (label, text.count(old))
    p.write_text(text.replace(old, new))
    t0 = time.time()
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *TESTS],
        cwd=work,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(work), "PATH": "/usr/bin:/bin"},
    )
    failed = [line for line in r.stdout.splitlines() if line.startswith("FAILED")]
    results.append((label, r.returncode != 0, failed[:1], round(time.time() - t0)))
    print(label, "CAUGHT" if r.returncode else "SURVIVED", failed[:1], flush=True)
    shutil.rmtree(work)
survived = [r for r in results if not r[1]]
print(f"{len(results) - len(survived)} of {len(results)} mutations caught")
sys.exit(1 if survived else 0)
