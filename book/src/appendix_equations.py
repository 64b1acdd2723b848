# %% [markdown]
# # Appendix: equations, code and tests
#
# Every equation the book uses is implemented once in `diffusion_lib` and checked by at
# least one test in the repository's `tests/` folder. The table below maps each one to
# both. It is generated: the cell after the list looks up every function in the library
# and every test in `tests/`, stops if one is missing, and counts the other tests that
# use the same function. A test in `tests/test_book_appendix.py` does the same, so the
# table cannot silently go out of date. Equation numbers are those of
# {cite:t}`ho2020denoising` unless another paper is named; chapter numbers are this
# book's.
#
# Run the tests of one row with, for example,
#
# ```bash
# pytest "tests/test_forward.py::test_q_sample_formula_with_given_noise"
# ```

# %% COLAB_SETUP
# %%
import ast
import importlib
import pathlib
import re

from IPython.display import Markdown, display

import diffusion_lib as dl  # noqa: F401 (every chapter imports it as dl)
from diffusion_lib.notebook import check_device, check_parameter

# %% tags=["parameters"]
seed = 0               # not used here: every chapter has these parameters
device = "cpu"         # not used here

# %% tags=["hide-input"]
check_parameter("seed", seed, int, lambda v: v >= 0, "a non-negative int")
check_device(device)
print(f"parameters ok: {seed=}, {device=}")

# %% [markdown]
# The list (click to show it): chapter, equation (LaTeX), where it comes from, the
# function that implements it, and the test that checks it most directly.

# %% tags=["hide-input"]
EQUATIONS = [
    (2, r"q(x_t \mid x_{t-1}) = \mathcal{N}(\sqrt{1-\beta_t}\, x_{t-1},"
        r" \beta_t \mathbf{I})",
     "Eq. 2",
     "diffusion_lib.forward.q_step",
     "tests/test_forward.py::test_q_step_formula_with_given_noise"),
    (2, r"v_t = (1-\beta_t)\, v_{t-1} + \beta_t",
     "variance preservation",
     "diffusion_lib.forward.q_step",
     "tests/test_forward.py::test_step_preserves_unit_variance"),
    (2, r"\beta_t: 10^{-4} \to 0.02,\ T = 1000",
     "Sec. 4",
     "diffusion_lib.schedules.NoiseSchedule.linear",
     "tests/test_schedules.py::test_linear_defaults_follow_the_paper"),
    (2, r"\bar\alpha_t = f(t)/f(0),\ f(t) = \cos^2\big(\tfrac{t/T + s}{1 +"
        r" s}\tfrac{\pi}{2}\big)",
     "Nichol & Dhariwal 2021, Eq. 17",
     "diffusion_lib.schedules.cosine_betas",
     "tests/test_schedules.py::test_cosine_schedule_against_its_formula"),
    (3, r"q(x_{1:T} \mid x_0) = \prod_{t=1}^T q(x_t \mid x_{t-1})", "Eq. 2",
     "diffusion_lib.forward.q_sample_chain",
     "tests/test_forward.py::test_chain_matches_closed_form_by_monte_carlo"),
    (4, r"\alpha_t = 1 - \beta_t,\ \bar\alpha_t = \prod_{s=1}^t \alpha_s",
     "Sec. 2",
     "diffusion_lib.schedules.NoiseSchedule",
     "tests/test_schedules.py::test_derived_quantities_match_numpy"),
    (4, r"q(x_t \mid x_0) = \mathcal{N}(\sqrt{\bar\alpha_t}\, x_0, (1 -"
        r" \bar\alpha_t) \mathbf{I})",
     "Eq. 4",
     "diffusion_lib.forward.q_sample",
     "tests/test_forward.py::test_q_sample_formula_with_given_noise"),
    (4, r"\mathbb{E}[x_t \mid x_0] = \sqrt{\bar\alpha_t}\, x_0,\ \mathrm{Var}"
        r" = 1 - \bar\alpha_t",
     "Eq. 4",
     "diffusion_lib.forward.q_mean_variance",
     "tests/test_forward.py::test_chain_matches_closed_form_by_monte_carlo"),
    (4, r"\mathrm{SNR}(t) = \bar\alpha_t / (1 - \bar\alpha_t)",
     "Kingma et al. 2021",
     "diffusion_lib.schedules.NoiseSchedule",
     "tests/test_schedules.py::test_snr_decreases_and_alpha_bars_in_unit_"
     "interval"),
    (5, r"z = \mu + \sigma \epsilon,\ \epsilon \sim \mathcal{N}(0, \mathbf{I})",
     "Kingma & Welling 2014", "diffusion_lib.gaussians.reparameterize",
     "tests/test_forward.py::test_reparameterization_passes_gradients"),
    (6, r"q(x_{t-1} \mid x_t, x_0) = \mathcal{N}(\tilde\mu_t(x_t, x_0),"
        r" \tilde\beta_t \mathbf{I})",
     "Eq. 6-7",
     "diffusion_lib.reverse.q_posterior_mean_variance",
     "tests/test_reverse.py::test_posterior_matches_brute_force_conditioning"),
    (6, r"\mu_\theta = \tfrac{1}{\sqrt{\alpha_t}}\big(x_t -"
        r" \tfrac{\beta_t}{\sqrt{1-\bar\alpha_t}}\epsilon_\theta(x_t, t)\big)",
     "Eq. 11",
     "diffusion_lib.reverse.p_mean_variance",
     "tests/test_reverse.py::test_eps_mean_with_true_noise_equals_posterior_"
     "mean"),
    (6, r"\sigma_t^2 = \tilde\beta_t \text{ or } \beta_t",
     "Sec. 3.2",
     "diffusion_lib.reverse.p_mean_variance",
     "tests/test_reverse.py::test_fixed_variances"),
    (6, r"\hat x_0 = (x_t - \sqrt{1-\bar\alpha_t}\,\epsilon) /"
        r" \sqrt{\bar\alpha_t}",
     "Eq. 4, solved",
     "diffusion_lib.reverse.predict_x0_from_eps",
     "tests/test_reverse.py::test_conversions_round_trip"),
    (6, r"D_\mathrm{KL}\big(\mathcal{N}(\mu_1, \sigma_1^2) \,\Vert\,"
        r" \mathcal{N}(\mu_2, \sigma_2^2)\big)",
     "Eq. 5 terms",
     "diffusion_lib.gaussians.normal_kl",
     "tests/test_losses.py::test_normal_kl_matches_torch_distributions"),
    (6, r"L_T = D_\mathrm{KL}(q(x_T \mid x_0) \,\Vert\, \mathcal{N}(0,"
        r" \mathbf{I}))",
     "Eq. 5",
     "diffusion_lib.losses.prior_bpd",
     "tests/test_losses.py::test_prior_term_is_negligible_for_the_default_"
     "schedule"),
    (6, r"L_{t-1} = \mathbb{E}_{x_t} D_\mathrm{KL}(q(x_{t-1} \mid x_t, x_0)"
        r" \Vert p_\theta(x_{t-1} \mid x_t))",
     "Eq. 5; x_t drawn given x_0",
     "diffusion_lib.losses.variational_bound",
     "tests/test_losses.py::test_kl_terms_match_their_closed_form_for_gaussian"
     "_data"),
    (6, r"L_0 = \mathbb{E}_{x_1}[-\log p_\theta(x_0 \mid x_1)],"
        r" \text{ discretized}",
     "Eq. 13; x_1 drawn given x_0",
     "diffusion_lib.gaussians.discretized_gaussian_log_likelihood",
     "tests/test_losses.py::test_discretized_likelihood_against_scipy_and_sums"
     "_to_one"),
    (6, r"L_T + \textstyle\sum_{t=2}^T L_{t-1} + L_0 \ge -\log p_\theta(x_0)",
     "Eq. 5, for each data point x_0",
     "diffusion_lib.losses.variational_bound",
     "tests/test_losses.py::test_bound_is_above_the_true_entropy_for_gaussian_"
     "data"),
    (6, r"L_\mathrm{simple} = \mathbb{E}\lVert \epsilon -"
        r" \epsilon_\theta(\sqrt{\bar\alpha_t} x_0 +"
        r" \sqrt{1-\bar\alpha_t}\epsilon, t) \rVert^2",
     "Eq. 14",
     "diffusion_lib.losses.l_simple",
     "tests/test_losses.py::test_l_simple_targets_are_related_exactly"),
    (6, r"\text{Algorithm 1 (training)}",
     "Alg. 1",
     "diffusion_lib.training.train",
     "tests/test_training.py::test_short_training_improves_energy_distance"),
    (6, r"x_{t-1} = \mu_\theta(x_t, t) + \sigma_t z,\ z = 0 \text{ at } t = 1",
     "Alg. 2",
     "diffusion_lib.samplers.p_sample",
     "tests/test_samplers.py::test_last_ddpm_step_adds_no_noise"),
    (6, r"\text{Algorithm 2 (sampling)}",
     "Alg. 2",
     "diffusion_lib.samplers.p_sample_loop",
     "tests/test_samplers.py::test_ddpm_with_oracle_reproduces_mixture"),
    (6, r"\epsilon^*(x_t, t) = \mathbb{E}[\epsilon \mid x_t] \text{ for"
        r" mixture data}",
     "exact minimiser of Eq. 14",
     "diffusion_lib.oracle.GaussianMixtureOracle",
     "tests/test_oracle.py::test_oracle_minimises_l_simple_and_hits_the_exact_"
     "minimum"),
    (7, r"x_0 = u / 127.5 - 1", "Sec. 3.3", "diffusion_lib.data.load_dataset",
     "tests/test_data.py::test_digits_split_shapes_and_scaling"),
    (7, r"(\sin \omega_i t, \cos \omega_i t),\ \omega_i = 10000^{-2i/d}",
     "Vaswani et al. 2017, Sec. 3.5", "diffusion_lib.models.timestep_embedding",
     "tests/test_models.py::test_timestep_embedding_matches_the_formula"),
    (7, r"\epsilon_\theta: \text{U-Net, 35.7M parameters (CIFAR-10)}",
     "App. B",
     "diffusion_lib.models.build_model",
     "tests/test_models.py::test_cifar10_preset_has_the_papers_35_7M_"
     "parameters"),
    (7, r"\bar\theta_k = d_k \bar\theta_{k-1} + (1 - d_k)\theta_k",
     "App. B",
     "diffusion_lib.training.ema.EMA",
     "tests/test_training.py::test_ema_update_is_a_lerp"),
    (7, r"d_k = \min(d, (1 + k)/(10 + k))",
     "EMA warm-up",
     "diffusion_lib.training.ema.ema_decay_at",
     "tests/test_training.py::test_lr_warmup_and_ema_warmup"),
    (7, r"\text{bits/dim} = L / (D \ln 2)",
     "Table 2",
     "diffusion_lib.metrics.bits_per_dim",
     "tests/test_metrics.py::test_bits_per_dim_is_the_mean_of_the_variational_"
     "bound"),
    (7, r"\lVert m_1 - m_2 \rVert^2 + \mathrm{tr}(\Sigma_1 + \Sigma_2 -"
        r" 2(\Sigma_1\Sigma_2)^{1/2})",
     "Heusel et al. 2017",
     "diffusion_lib.metrics.frechet_distance",
     "tests/test_metrics.py::test_frechet_distance_matches_scipy_sqrtm_for_"
     "full_covariances"),
    (6, r"2\mathbb{E}\lVert X - Y \rVert - \mathbb{E}\lVert X - X' \rVert -"
        r" \mathbb{E}\lVert Y - Y' \rVert",
     "Szekely & Rizzo 2013",
     "diffusion_lib.metrics.energy_distance",
     "tests/test_metrics.py::test_energy_distance_matches_scipy_cdist"),
    (8, r"x_s = \sqrt{\bar\alpha_s}\hat x_0 + \sqrt{1 - \bar\alpha_s -"
        r" \sigma_{t,s}^2}\,\hat\epsilon + \sigma_{t,s} z",
     "Song, Meng & Ermon 2021, Eq. 12",
     "diffusion_lib.samplers.ddim_sample_loop",
     "tests/test_samplers.py::test_ddim_on_gaussian_data_is_the_predicted_"
     "linear_map"),
    (8, r"\eta = 1,\ s = t - 1:\ \sigma_{t,s}^2 = \tilde\beta_t \text{ (DDPM)}",
     "Song, Meng & Ermon 2021, Eq. 16",
     "diffusion_lib.samplers.ddim_step",
     "tests/test_samplers.py::test_ddim_eta1_full_sequence_equals_ddpm_step_"
     "for_step"),
    (8, r"\tau_1 < \dots < \tau_S \subset \{1, \dots, T\}",
     "Song, Meng & Ermon 2021, Sec. 4.2",
     "diffusion_lib.samplers.ddim_timesteps",
     "tests/test_samplers.py::test_ddim_on_gaussian_data_is_the_predicted_"
     "linear_map"),
    (8, r"\epsilon^*(x_t, t) = -\sqrt{1 - \bar\alpha_t}\, \nabla_{x_t} \log"
        r" p_t(x_t)",
     "Vincent 2011",
     "diffusion_lib.oracle.GaussianMixture.score",
     "tests/test_oracle.py::test_score_is_the_gradient_of_log_prob"),
    (8, r"\mathbb{E}[\epsilon \mid x_t] \text{ by importance sampling}",
     "Tweedie's formula",
     "diffusion_lib.oracle.GaussianMixtureOracle",
     "tests/test_oracle.py::test_oracle_eps_matches_importance_sampling"),
    (9, r"\epsilon^*(x_t, k) = \sqrt{1 - \bar\alpha_t}\, C_k^{-1}"
        r"(x_t - \sqrt{\bar\alpha_t}\, \mu_k)",
     r"labelled Gaussian mixture; "
     r"$C_k = \bar\alpha_t \Sigma_k + (1 - \bar\alpha_t) \mathbf{I}$",
     "diffusion_lib.oracle.ConditionalGaussianMixtureOracle",
     "tests/test_guidance.py::"
     "test_conditional_oracle_is_each_components_own_denoiser"),
    (9, r"\nabla_x \log p(x \mid y) = \nabla_x \log p(x)"
        r" + \nabla_x \log p(y \mid x)",
     "Bayes' rule on scores",
     "diffusion_lib.oracle.GuidedGaussianMixtureOracle",
     "tests/test_guidance.py::"
     "test_guided_oracle_is_the_score_of_the_tilted_density"),
    (9, r"\tilde\epsilon_w = (1 + w)\, \epsilon_\theta(x_t, y)"
        r" - w\, \epsilon_\theta(x_t, \varnothing)",
     "Ho & Salimans 2022, Eq. 6",
     "diffusion_lib.guidance.ClassifierFreeGuidance",
     "tests/test_guidance.py::"
     "test_guided_prediction_is_the_formula_from_two_separate_calls"),
    (9, r"y \to \varnothing \text{ with probability } p_\text{uncond}",
     "Ho & Salimans 2022, Algorithm 1",
     "diffusion_lib.training.conditional.drop_labels",
     "tests/test_conditional.py::test_label_dropout_rate_and_kept_labels"),
    (9, r"\text{coverage} = \tfrac{1}{M} \sum_j \mathbb{1}\big[\exists i:\ "
        r"\lVert x_i - y_j \rVert \le r_j\big]",
     "Naeem et al. 2020", "diffusion_lib.metrics.coverage",
     "tests/test_conditional.py::test_nearest_class_and_coverage_by_hand"),
]


# %% [markdown]
# The generated table. For each row: the function must exist in the installed library,
# the named test must exist and mention the function (in its body or in a fixture it
# uses), and "+ n" counts the other tests that mention it. The last column names the
# function first, then the test.

# %% tags=["hide-input"]
def resolve(path):
    """The object at a dotted path such as diffusion_lib.forward.q_step."""
    parts = path.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError:
            continue
        for name in parts[i:]:
            obj = getattr(obj, name)
        return obj
    raise ImportError(path)


def tests_mentioning(tests_dir):
    """{test id: set of names its body and its fixtures mention},
    for tests/test_*.py."""
    found = {}
    for file in sorted(tests_dir.glob("test_*.py")):
        tree = ast.parse(file.read_text())
        functions = {n.name: n for n in ast.walk(tree)
                     if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
        for name, node in functions.items():
            if not name.startswith("test_"):
                continue
            used = set()
            bodies = [node] + [functions[a.arg] for a in node.args.args
                               if a.arg in functions]
            for body in bodies:
                for n in ast.walk(body):
                    if isinstance(n, ast.Name):
                        used.add(n.id)
                    elif isinstance(n, ast.Attribute):
                        used.add(n.attr)
            found[f"tests/{file.name}::{name}"] = used
    return found


tests_dir = next((p for p in [pathlib.Path("../tests"), pathlib.Path("tests")]
                  if (p / "test_forward.py").is_file()), None)
tests = tests_mentioning(tests_dir) if tests_dir else None
def breakable(identifier):
    """Code text that may wrap after its dots and underscores (<wbr>): long
    names would otherwise make the table wider than the page."""
    wrapped = identifier.replace("_", "_<wbr>").replace(".", ".<wbr>")
    wrapped = re.sub(r"(?<=[a-z])(?=[A-Z])", "<wbr>", wrapped)   # CamelCase
    return "<code>" + wrapped + "</code>"


rows = ["| ch. | equation (source) | implemented by, then checked by |",
        "|---:|---|---|"]
for chapter, latex, source, function, test in sorted(EQUATIONS,
                                                     key=lambda row: row[0]):
    resolve(function)                             # stops here if it is gone
    name = function.rsplit(".", 1)[1]
    file, test_name = test.removeprefix("tests/").split("::")
    checked = f"{breakable(test_name)} in `{file}`"
    if tests is not None:
        assert test in tests, f"{test} does not exist"
        assert name in tests[test], f"{test} does not use {name}"
        checked += f" + {sum(name in used for used in tests.values()) - 1}"
    rows.append(f"| {chapter} | ${latex}$<br>({source}) "
                f"| {breakable(function.replace('diffusion_lib', 'dl'))}"
                f"<br>{checked} |")
display(Markdown("\n".join(rows)))

# %% tags=["nbval-check-output"]
if tests is None:
    print("tests/ not found (on Colab, clone the repository): "
          "test column not verified")
else:
    print(f"{len(EQUATIONS)} equations: every function exists,")
    print("every named test exists and uses it")

# %% [markdown]
# `dl.` stands for `diffusion_lib.`. Most functions are checked by several tests: the
# named one compares the implementation with an independent computation (a closed form,
# scipy, Monte Carlo or brute-force conditioning); others check shapes, dtypes, bad
# input and devices. `tests/mutation_check.py` (`make mutation`) breaks each formula in
# turn and confirms that a test fails.
#
# The terms of the bound are expectations over the forward process given $x_0$:
# $L_{t-1}$ and $L_0$ average over $x_t$ or $x_1$ drawn from $q(\cdot \mid x_0)$, and
# with these averages the bound holds for each data point (chapter 6 derives it). One
# draw per term, as `variational_bound` makes, is an unbiased estimate of it, not a
# bound itself.
#
# The sources named in the table, besides {cite:t}`ho2020denoising`:
# {cite:t}`nichol2021improved` (the cosine schedule), {cite:t}`kingma2021variational`
# (the signal-to-noise ratio as the description of a schedule),
# {cite:t}`kingma2014autoencoding` (reparameterization), {cite:t}`vaswani2017attention`
# (the timestep embedding), {cite:t}`heusel2017gans` (the Frechet distance),
# {cite:t}`szekely2013energy` (the energy distance), {cite:ts}`song2021denoising`
# (DDIM), {cite:t}`vincent2011connection` and {cite:t}`efron2011tweedie` (the score
# and Tweedie's formula), {cite:t}`ho2022classifierfree` (classifier-free guidance) and
# {cite:t}`naeem2020reliable` (coverage).
