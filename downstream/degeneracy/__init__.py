"""Degeneracy report: what a discovered symmetry predicts about trained weights, measured.

:func:`run_degeneracy` takes a field task with a discovered group of 2x2 chart transformations
(heat, digits on the sphere) and trains, on the same chart samples and with the same budget,

* an UNCONSTRAINED model: a stack of ``nn.Conv2d`` with SiLU (:class:`ConvNet`), and
* a GROUP model: the same stack built from :class:`EquivariantConv2d` layers solved from the
  group, with invariant gates (:class:`EquivariantConvNet`),

once on the task's data (symmetric) and once on a SYMMETRY-BROKEN version of it (``broken``:
DataModule options that destroy the symmetry, e.g. anisotropic diffusion for heat, unrotated
digits), for every seed. For each trained model it measures, at the trained weights ``w*``:

* ``raw_parameters`` / ``free_parameters`` (:func:`count_parameters`);
* the local learning coefficient (:func:`estimate_llc`) with its per-chain values;
* the functional dimension (rank of ``d f / d w`` on ``n_rank`` training samples, computed in
  float64 and cut at the working precision of the data and parameters, the default tolerance
  of :func:`jacobian_spectrum`);
* the Gauss-Newton matrix ``G`` of the negative log-likelihood: its rank from the exact whitened
  Jacobian on the ``n_rank`` samples (same tolerance), and its spectrum from an unbiased
  randomised estimate over all ``n`` samples (:func:`gauss_newton_probe`, ``4 d`` probes), which
  also gives the effective dimension ``sum n_beta mu / (n_beta mu + gamma)`` at the LLC's own
  settings (half of it is what the LLC estimate approaches if the basin is quadratic) and the
  sampler's preconditioner;
* the emulability residual of every generator of the group (:func:`emulation`: the input field
  perturbed by the generator's Lie derivative, held-out relative residual; 0 = a weight change
  reproduces it exactly).

Likelihood (what the LLC is of)
-------------------------------
Each chart sample is one draw. Regression (heat): Gaussian with a fixed noise ``sigma`` over the
output pixels, ``NLL = 0.5 sum_pixels (f - y)^2 / sigma^2``; ``noise_std: auto`` (default) sets
``sigma`` to the RMS residual of the unconstrained model trained on the symmetric data with the
first seed (the maximum-likelihood noise level of the reference model), and that one value is
used for every model and data version of the run so that their LLCs share a temperature.
Classification (digits): categorical, ``NLL = sum_pixels cross-entropy`` (unweighted: the
likelihood must be a likelihood). Both models are trained on that NLL (regression with
``sigma = 1``, which only rescales it) by Adam with a cosine learning-rate decay, then
full-batch L-BFGS, and the LLC uses ``n_beta = n / log n`` over the ``n`` chart samples. Seeds
vary the initial weights, the batch order, the sampler and the chart samples, drawn
per seed: the DataModule's fields with ``data.seed + seed`` and the patches with ``seed``, so
the spread over seeds includes the data's own variability.

Sampler. The calibrated defaults of :func:`estimate_llc` assume Hessian eigenvalues of order
one; the per-pixel NLLs of conv nets span many decades (measured on heat: largest Gauss-Newton
eigenvalue 3.5e5 at sigma = 0.19), and a plain SGLD step stable on the stiffest direction never
moves along the soft ones. The chains are therefore preconditioned with
``P = (n_beta G + gamma I)^-1`` (``G`` the probe estimate of the Gauss-Newton matrix of the NLL
over the training samples), which leaves the posterior unchanged and relaxes every quadratic
direction at the same rate; the step ``llc.step_size`` (default 0.05) is then dimensionless.
Checked in
``tests/test_llc.py`` on an ill-conditioned quadratic basin (eight decades): within 8 % of the
exact limit, where the plain sampler reaches under 75 %. ``llc.full_batch_every: k`` (default
10) measures the excess ``L_n(w_t) - L_n(w*)`` on all ``n`` samples every ``k``-th draw instead
of on the step's minibatch: at a tight localisation the minibatch term
``(grad L_B - grad L_n) . (w_t - w*)`` dominates the excess, half the draws fall below ``w*`` and
the health check fails even at an exact minimum (tested on linear regression at gamma 1e4: 50 %
below with the minibatch excess, 0 % with the full one, which lands on the quadratic limit with
a 3x smaller standard error). ``llc.step_check: f`` (default 0.5; 0 = off) repeats every
estimate with independent chains at the step ``f * llc.step_size`` (burn-in ``/ f``, the same
simulated time) and reports both, the difference, a flag where it exceeds 2 standard errors,
and the linear extrapolation to step 0 (:func:`step_dependence`): minibatch gradient noise
heats the chains by a factor ``1 + O(step)``, which the health checks cannot see (measured on
the heat task: 22.6 at step 0.05 and batch 128, 9.7 at step 0.0125, 8.2 at batch 512, half the
effective dimension 5.9). The same settings are used for every
model, so the LLC values of one run are comparable with each other; they are not calibrated
against a known learning coefficient (none is known for these models), and the health checks
of :func:`estimate_llc` are reported with each value.

Gradient correction. ``w*`` is Adam's end point polished by full-batch L-BFGS in
coordinates whitened by the Gauss-Newton matrix (:func:`whitened_polish`,
``training.polish_rounds`` x ``training.polish_steps``), and still not an exact minimum: these
losses are so ill-conditioned that 200 plain L-BFGS iterations lowered the gradient norm of the
heat group model only from 1.44 to 1.32, and the whitened rounds, though far better, stop
short of one too. The chains then slide down the residual gradient along the soft
directions and the estimate goes negative (measured at ``gamma = 1``: every chain of every heat
model; by the closed-form bias, no localisation up to 1e8 brings the slide under 5 % of the
value, since both fall like ``1 / gamma``). The chains
therefore sample the tilted loss ``L_n(w) - grad L_n(w*) . (w - w*)`` (``gradient_correction``
of :func:`estimate_llc`): the same curvature, with ``w*`` a critical point. On a quadratic loss
this is exactly the estimate at the minimum (tested); along singular directions it is an
approximation. The report gives, for each model, the gradient norm, the bias the correction
removes (:func:`gradient_bias`, quadratic model) and half the effective dimension (the
estimate on a quadratic basin): the gap between the estimate and the latter is what the
quadratic picture misses.

Localisation. At such a ``w*`` the Hessian also has negative eigenvalues (measured on the digits
group model: 47 of 217, the most negative -0.96 against a largest of 636), and the localised
posterior ``exp(-n_beta L_n - gamma |w - w*|^2 / 2)`` is only proper when ``gamma`` outweighs
``n_beta`` times the most negative one: with ``gamma = 1`` every chain diverged.
``llc.localization: auto`` (default) therefore takes ``gamma = max(1, 2 n_beta |lambda_min|)``
over all models of the run (``lambda_min`` by Lanczos on Hessian-vector products over all ``n``
samples, :func:`hessian_extreme_eigenvalue`, on a float64 copy of the model unless
``llc.hessian_dtype: float32``: float32 products overstated it 8x on a heat model), one
``gamma`` for all so that their LLCs stay
comparable. Directions with ``n_beta mu < gamma`` then hardly count, so the LLC is the one
seen at that localisation; half the effective dimension at the same ``gamma`` is its quadratic
reference.

Symmetry directions. For the unconstrained conv stack the weight-space image of a generator
``A`` is known: transforming every kernel, ``K -> K(exp(tA) z)``, turns ``f`` into
``g^-1 . f(g . x)``, which equals ``f`` when ``f`` is equivariant. The report gives the loss
curvature ``t^T G t / |t|^2`` along that tangent ``t``, relative to a random direction
(``trace G / d``) and as a quantile of ``G``'s spectrum: a data symmetry that the trained weights
express makes it a flat direction, and breaking the symmetry should stiffen it. The group
model's kernels are invariant by construction, so it has no such direction: the constraint
removed it (with every other non-invariant kernel component) from the parameters.
The control: the same construction with the two shears (:func:`control_generators`: area
preserving like a rotation, orthogonal to the discovered algebra), on the same weights, with
the Gauss-Newton and the exact Hessian (Hessian-vector products in ``llc.hessian_dtype``). The
ratio
``curvature(generator) / mean curvature(shears)`` (and, since one shear can be far stiffer
than the other, ``/ min curvature(shears)``) compares the symmetry's direction with a
matched non-symmetry on one model and one data set, so unlike ``Delta lambda`` it does not mix
in the change of the function to learn. Symmetric and broken data are compared seed by seed
(:func:`paired_log_ratio`: both versions of a seed share its initial weights and patches), with
a 95% Student interval of the ratio; a change is read as resolved only when it excludes 1.

What the symmetry predicts (the background notes)
-------------------------------------------------
If the data distribution is invariant under a group G and the model can emulate G's action by a
weight change, the loss is constant along the orbit of ``w*``: ``dim G`` more flat directions,
which lowers the rank bound ``r / 2 <= lambda <= r / 2 + (d - r) / 4`` by between ``dim G / 4``
(upper bound) and ``dim G / 2`` (lower bound). The report states this predicted shift next to
the measured susceptibility ``Delta lambda = lambda(symmetric) - lambda(broken)`` of each model
and its uncertainty (paired by seed: the sd of the per-seed differences over ``sqrt(k)`` for
``k >= 2`` seeds; for one seed the two chain standard errors in quadrature). With the step
check on, the same paired difference of the step-0 extrapolations (``delta_step0``) is given
too: the sampler's step bias grows with the task's difficulty, so it does not cancel in
``Delta lambda``. Breaking the symmetry also changes the function to be learned, so
``Delta lambda`` mixes both effects: the report reads it with that caveat.

The rank bound counts a direction fully or not at all; the localised estimator counts a
direction of curvature ``c`` with the weight ``w = n_beta c / (n_beta c + gamma)``
(:func:`effective_weight`, its term of the effective dimension). So at the run's ``gamma`` the
symmetry can lower the LLC by at most half the weight its directions have on the broken data
(``attainable_drop``), the measured curvatures on both data versions give the quadratic estimate
``quadratic_drop``, and ``best_gamma_drop`` is the largest drop those curvatures allow at any
``gamma``. Measured on digits (seeds 0-3): the rotation direction of the unconstrained stack
has ``n_beta c`` of 7-47 against ``gamma`` = 241, so the symmetry could lower the LLC by at
most 0.042 there, and by at most 0.060 at any ``gamma``, since rotated digits flatten the
direction only 1.6x; the measured ``Delta lambda`` extrapolated to step 0 (+8.9 +- 4.9 over the
four seeds) follows half the change of the effective dimension (+8.4 +- 3.4) instead.

Outputs: :func:`run_degeneracy` returns a :class:`DegeneracyReport` (summary, table and reading by
:mod:`atlasd.downstream.degeneracy.summary` and :mod:`~atlasd.downstream.degeneracy.reading`),
whose :func:`write_degeneracy_report` writes
``report.json``, ``report.md`` and ``report.png`` atomically. Seeds run in separate
processes (or machines) combine with :func:`merge_degeneracy_reports` (``atlasd
degeneracy-merge``), which re-summarises the stored runs over all seeds and refuses reports
that are not comparable; ``llc.localization: auto`` picks ``gamma`` per run, so runs meant to
be merged fix it to one number (a fixed ``gamma`` below ``n_beta |lambda_min|`` is flagged in
the log and the reading).

Modules: :mod:`.config` (typed, torch-free), :mod:`.runner`, :mod:`.measure`,
:mod:`.likelihood`, :mod:`.llc`, :mod:`.ranks`, :mod:`.emulate`, :mod:`.summary`,
:mod:`.reading`, :mod:`.report`; names are imported lazily.
"""

from __future__ import annotations

from atlasd.lazy import lazy_getattr

# public name -> module of atlasd.downstream.degeneracy that defines it
_EXPORTS: dict[str, str] = {
    "DegeneracyConfig": "config",
    "DegeneracyTrainingConfig": "config",
    "LLCConfig": "config",
    "SamplesConfig": "config",
    "estimate_llc": "llc",
    "LLCEstimate": "llc",
    "LLCHealthWarning": "llc",
    "LLCHealthError": "llc",
    "step_dependence": "llc",
    "default_llc_settings": "llc",
    "mse_nll": "llc",
    "functional_dimension": "ranks",
    "jacobian_spectrum": "ranks",
    "gauss_newton_spectrum": "ranks",
    "effective_dimension": "ranks",
    "llc_rank_bounds": "ranks",
    "gauss_newton_matrix": "ranks",
    "gauss_newton_probe": "ranks",
    "loss_hessian": "ranks",
    "effective_weight": "ranks",
    "hessian_vector_product": "ranks",
    "hessian_extreme_eigenvalue": "ranks",
    "FlatModel": "ranks",
    "JacobianSpectrum": "ranks",
    "parameter_jacobian": "ranks",
    "emulability": "emulate",
    "emulation": "emulate",
    "Emulation": "emulate",
    "parameter_symmetries": "emulate",
    "lie_derivative": "emulate",
    "input_perturbation": "emulate",
    "gaussian_nll": "likelihood",
    "categorical_nll": "likelihood",
    "NLLOutputs": "likelihood",
    "whitened_polish": "likelihood",
    "flat_gradient": "likelihood",
    "measure_degeneracy": "measure",
    "control_generators": "measure",
    "conv_rotation_tangent": "measure",
    "gradient_bias": "measure",
    "symmetry_direction": "measure",
    "run_degeneracy": "runner",
    "chart_samples": "runner",
    "ChartSamples": "runner",
    "check_field_task": "runner",
    "fit_model": "runner",
    "DegeneracyReport": "summary",
    "summarise_degeneracy": "summary",
    "paired_log_ratio": "reading",
    "write_degeneracy_report": "report",
    "merge_degeneracy_reports": "report",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_getattr(__name__, _EXPORTS)
