"""Item response theory for benchmarks: a multidimensional 2PL model, and tinyBenchmarks' p-IRT and gp-IRT.

A benchmark run by many models is a correctness matrix ``Y`` (models x items). The two-parameter logistic
model explains it with one ability vector per model and a discrimination vector and a difficulty per item::

    P(Y[m, i] = 1) = sigmoid(alpha_i . theta_m - beta_i)

Once the item parameters are fitted on a population, a new model's ability can be read from its answers
on a few anchor items, and the model then predicts its answers on every item it was never asked. That is
what turns a 100-item lite run into an estimate of the full score (:func:`pirt_estimate`).

- **Fit** (:func:`fit_irt`): maximum a posteriori by L-BFGS in float64: the Bernoulli likelihood,
  ``theta ~ N(0, I)`` and hierarchical priors that pull every item towards one common curve,
  ``alpha_i ~ N((1, 0, ..., 0), item_sd^2 I)`` and ``beta_i ~ N(mu_beta, item_sd^2)`` with ``mu_beta``
  fitted. tinyBenchmarks fits the same model by variational inference with py-irt's hierarchical priors
  (means and precisions learned); a MAP fit is the deterministic version, with the scales fixed (a MAP
  estimate of a prior's scale collapses to zero) and alpha's mean fixed (a free one lets every alpha grow
  while theta shrinks, and the posterior has no maximum). The shrinkage is what lets a population of a
  dozen or two models generalise. Measured on 2PL populations of 19 models x 1,000 items (1- and 2-D),
  predicting a held-out model from 100 random items: p-IRT's mean error was 3.0-3.4 points with
  ``item_sd = 0.5``, 3.6-4.1 with ``item_sd = 1``, and 4.8-5.8 with priors centred at 0 (which flatten
  every curve and pull estimates towards 50%); the plain mean of the same items, 2.8-3.8. Partial credit
  in [0, 1] enters the likelihood as a soft target (tinyBenchmarks thresholds it to 0/1 first).
- **Ability of a new model** (:func:`fit_ability`): the item parameters frozen, Newton's method on the
  same posterior (tinyBenchmarks maximises the likelihood alone; the prior keeps a model that solves
  every anchor at a finite ability).
- **p-IRT** (tinyBenchmarks eq. for ``Z^p-IRT``): the observed mean on the k seen items, and the model's
  predicted accuracy on the N - k unseen ones, weighted by the fraction seen, ``k / N``.
- **gp-IRT**: ``lam * (anchor-weighted estimate) + (1 - lam) * p-IRT``. The heuristic
  ``lam = b^2 / (b^2 + sigma^2)`` (:func:`gpirt_lambda`) trusts the IRT part more when its validation
  error ``b`` is small against the sampling variance ``sigma^2`` of the weighted estimate.

The dimension: tinyBenchmarks validates it over ``DIMS`` and takes the smallest within 0.0025 of the best
validation error (:func:`choose_dim`); the default here is the smallest of those, 2, which suits the
dozen-model populations this course builds.

References: Maia Polo et al. 2024, "tinyBenchmarks: evaluating LLMs with fewer examples" (sections 3-4),
github.com/felipemaiapolo/tinyBenchmarks (``tutorials/training_irt.ipynb``) and
github.com/felipemaiapolo/efficbench (``experiments.py``, ``acc.py``); Lalor et al. 2019, py-irt.
"""

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

DIMS = (2, 5, 10, 15)  # the dimensions tinyBenchmarks validates (efficbench run_experiment.py)
DIM_TOLERANCE = 0.0025  # the smallest dimension within this of the best validation error wins
ITEM_SD = 0.5  # the items' prior spread around their common curve (see the module docstring)


def check_responses(Y, name: str = "Y") -> np.ndarray:
    """``Y`` as a float64 (models, items) array of correctness in [0, 1]; a ValueError names any problem."""
    Y = np.asarray(Y, dtype=np.float64)
    if Y.ndim != 2:
        raise ValueError(f"{name} must be 2-D (models, items), got shape {Y.shape}")
    if Y.shape[0] < 1 or Y.shape[1] < 1:
        raise ValueError(f"{name} needs at least one model and one item, got shape {Y.shape}")
    if not np.isfinite(Y).all() or Y.min() < 0 or Y.max() > 1:
        raise ValueError(
            f"{name} must hold correctness in [0, 1] (1 = correct); found values outside it or NaN"
        )
    return Y


@dataclass(eq=False)
class IRTParams:
    """A fitted 2PL model: ``P(correct) = sigmoid(alpha[i] @ theta[m] - beta[i])``."""

    theta: np.ndarray  # (M, d) model abilities
    alpha: np.ndarray  # (N, d) item discriminations
    beta: np.ndarray  # (N,) item difficulties

    def __post_init__(self):
        d = self.theta.shape[1]
        N, d_a = self.alpha.shape
        if d_a != d or self.beta.shape != (N,):
            raise ValueError(
                f"IRTParams shapes disagree: theta {self.theta.shape}, alpha {self.alpha.shape}, "
                f"beta {self.beta.shape}; want (M, d), (N, d), (N,)"
            )


def item_probs(theta, alpha, beta) -> np.ndarray:
    """P(correct): (N,) for one ability (d,), (M, N) for several (M, d)."""
    z = np.asarray(theta) @ np.asarray(alpha).T - np.asarray(beta)  # (N,) or (M, N)
    return 1.0 / (1.0 + np.exp(-np.clip(z, -30, 30)))


def predict_accuracy(theta, alpha, beta):
    """Expected accuracy over all N items: a float for one ability (d,), (M,) for several (M, d)."""
    p = item_probs(theta, alpha, beta)
    return float(p.mean()) if p.ndim == 1 else p.mean(axis=1)


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 0.05, 0.95)
    return np.log(p / (1 - p))


def fit_irt(Y, dim: int = 2, steps: int = 300, seed: int = 0, item_sd: float = ITEM_SD) -> IRTParams:
    """MAP fit of a ``dim``-dimensional 2PL model to ``Y`` (models, items) by L-BFGS; deterministic."""
    Y = check_responses(Y)
    if dim < 1 or steps < 1 or item_sd <= 0:
        raise ValueError(f"need dim >= 1, steps >= 1 and item_sd > 0, got {dim}, {steps}, {item_sd}")
    M, N = Y.shape
    if M < 2:
        raise ValueError(f"fit_irt needs at least 2 models to tell abilities apart, got {M}")
    g = torch.Generator().manual_seed(seed)
    # Start from the classical picture: ability from each model's accuracy, difficulty from each item's.
    skill = _logit(Y.mean(axis=1))
    skill = (skill - skill.mean()) / (skill.std() + 1e-6)
    theta0 = 0.1 * torch.randn(M, dim, generator=g, dtype=torch.float64)
    theta0[:, 0] += torch.from_numpy(skill)
    alpha0 = 0.1 * torch.randn(N, dim, generator=g, dtype=torch.float64)
    alpha0[:, 0] += 1.0
    beta0 = torch.from_numpy(-_logit(Y.mean(axis=0)))
    # alpha's prior mean is fixed: a free one would let theta shrink to 0 while every alpha grows alike,
    # and the posterior would have no maximum. (1, 0, ..., 0): one general skill plus specific ones.
    mu_alpha = torch.zeros(dim, dtype=torch.float64)
    mu_alpha[0] = 1.0
    mu_beta = beta0.mean()
    theta, alpha, beta = theta0.requires_grad_(), alpha0.requires_grad_(), beta0.requires_grad_()
    mu_beta.requires_grad_()
    target = torch.from_numpy(Y)
    opt = torch.optim.LBFGS(
        [theta, alpha, beta, mu_beta],
        lr=1.0,
        max_iter=steps,
        history_size=20,
        line_search_fn="strong_wolfe",
        tolerance_grad=1e-10,
        tolerance_change=1e-14,
    )

    def closure():
        opt.zero_grad()
        logits = theta @ alpha.T - beta  # (M, N)
        nll = F.binary_cross_entropy_with_logits(logits, target, reduction="sum")
        items = (alpha - mu_alpha).square().sum() + (beta - mu_beta).square().sum()
        prior = 0.5 * (theta.square().sum() + items / item_sd**2)
        loss = (nll + prior) / (M * N)  # per-entry scale: the tolerances mean the same for any size
        loss.backward()
        return loss

    opt.step(closure)
    theta, alpha, beta = (t.detach().numpy().copy() for t in (theta, alpha, beta))
    # alpha . theta - beta is unchanged by theta -> (theta - mu) / s, alpha -> alpha * s,
    # beta -> beta - alpha . mu: put the population on the prior's scale (mean 0, unit spread per
    # dimension), so that a new model's ability (fit_ability, prior N(0, 1)) is read on the same scale.
    # The sign is fixed so that more ability means more correct answers (positive mean discrimination).
    mu = theta.mean(axis=0)  # (d,)
    s = theta.std(axis=0) + 1e-12  # (d,)
    s = s * np.where(alpha.sum(axis=0) < 0, -1.0, 1.0)
    beta = beta - alpha @ mu
    return IRTParams((theta - mu) / s, alpha * s, beta)


def fit_ability(y_subset, alpha_subset, beta_subset, prior_sd: float = 1.0, steps: int = 100) -> np.ndarray:
    """A new model's ability (d,) from its answers (k,) on k items with frozen parameters (MAP, Newton)."""
    y = np.asarray(y_subset, dtype=np.float64)
    A = np.asarray(alpha_subset, dtype=np.float64)  # (k, d)
    b = np.asarray(beta_subset, dtype=np.float64)  # (k,)
    if A.ndim != 2 or y.shape != (A.shape[0],) or b.shape != y.shape:
        raise ValueError(f"want y (k,), alpha (k, d), beta (k,); got {y.shape}, {A.shape}, {b.shape}")
    if y.size and (not np.isfinite(y).all() or y.min() < 0 or y.max() > 1):
        raise ValueError("y_subset must hold correctness in [0, 1]")
    d = A.shape[1]

    def log_post(t):
        z = A @ t - b
        return float(np.sum(y * z - np.logaddexp(0.0, z)) - 0.5 * t @ t / prior_sd**2)

    theta = np.zeros(d)
    f = log_post(theta)
    for _ in range(steps):  # the log posterior is strictly concave: damped Newton converges
        p = item_probs(theta, A, b)  # (k,)
        grad = A.T @ (y - p) - theta / prior_sd**2  # (d,)
        H = (A.T * (p * (1 - p))) @ A + np.eye(d) / prior_sd**2  # (d, d), minus the Hessian
        step = np.linalg.solve(H, grad)
        t = 1.0
        while log_post(theta + t * step) < f and t > 1e-8:
            t /= 2
        theta = theta + t * step
        f = log_post(theta)
        if np.abs(t * step).max() < 1e-10:
            break
    return theta


def pirt_estimate(y_seen, items, alpha, beta, theta=None) -> float:
    """p-IRT: ``(k/N) mean(y_seen) + (1 - k/N) mean_unseen P(correct | theta)``, theta from the seen items."""
    y = np.asarray(y_seen, dtype=np.float64)
    items = np.asarray(items)
    N = len(beta)
    if y.shape != items.shape or len(np.unique(items)) != len(items):
        raise ValueError(
            f"need one answer per distinct seen item, got {y.shape} answers for items {items.shape}"
        )
    if theta is None:
        theta = fit_ability(y, alpha[items], beta[items])
    unseen = np.setdiff1d(np.arange(N), items)
    if unseen.size == 0:
        return float(y.mean())
    lam = len(items) / N
    return float(lam * y.mean() + (1 - lam) * predict_accuracy(theta, alpha[unseen], beta[unseen]))


def gpirt_estimate(weighted: float, pirt: float, lam: float) -> float:
    """gp-IRT: the convex combination ``lam * weighted + (1 - lam) * pirt``."""
    if isinstance(lam, str) or not 0 <= lam <= 1:
        raise ValueError(f"gp-IRT's lam must be a number in [0, 1], got {lam!r}")
    return float(lam * weighted + (1 - lam) * pirt)


def validation_error(Y, dim: int = 2, steps: int = 300, seed: int = 0) -> float:
    """tinyBenchmarks' IRT validation error: fit on all models but every fifth, read each held-out model's
    ability from the even items, and average |predicted - observed| accuracy on the odd items."""
    Y = check_responses(Y)
    M, N = Y.shape
    if M < 3 or N < 2:
        raise ValueError(f"IRT validation needs at least 3 models and 2 items, got {M} models, {N} items")
    val = np.arange(0, M, 5)
    train = np.setdiff1d(np.arange(M), val)
    params = fit_irt(Y[train], dim=dim, steps=steps, seed=seed)
    seen, unseen = np.arange(0, N, 2), np.arange(1, N, 2)
    errors = []
    for m in val:
        theta = fit_ability(Y[m, seen], params.alpha[seen], params.beta[seen])
        errors.append(
            abs(predict_accuracy(theta, params.alpha[unseen], params.beta[unseen]) - Y[m, unseen].mean())
        )
    return float(np.mean(errors))


def choose_dim(Y, dims=DIMS, steps: int = 300, seed: int = 0) -> tuple[int, list[float]]:
    """The smallest dimension whose validation error is within ``DIM_TOLERANCE`` of the best; the errors."""
    errors = [validation_error(Y, dim=d, steps=steps, seed=seed) for d in dims]
    best = min(errors)
    return next(d for d, e in zip(dims, errors, strict=True) if e - best < DIM_TOLERANCE), errors


def gpirt_lambda(Y, k: int, anchor: bool = True, dim: int = 2, steps: int = 300, seed: int = 0) -> float:
    """tinyBenchmarks' heuristic ``lam = b^2 / (b^2 + sigma^2)`` for a k-item subset of ``Y``'s items.

    ``b`` is the IRT validation error (:func:`validation_error`); ``sigma^2 = v / k`` with ``v`` the mean
    over models of the per-model variance of correctness across items (a random sample's variance), and
    ``v / (4 k)`` for anchor points, whose clustering tinyBenchmarks credits with a fourfold reduction.
    """
    Y = check_responses(Y)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    b = validation_error(Y, dim=dim, steps=steps, seed=seed)
    v = float(Y.var(axis=1).mean())
    sigma2 = v / (4 * k) if anchor else v / k
    if b * b + sigma2 == 0:
        return 1.0  # every model answers every item alike: the weighted estimate is exact
    return b * b / (b * b + sigma2)
