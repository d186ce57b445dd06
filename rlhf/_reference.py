"""Pure-NumPy twins of the C kernels in rlhf._core.

Each function has the name and signature of its kernel and computes the same
thing in plain NumPy and Python, written for clarity rather than speed. The
tests compare every kernel with its twin; nothing in rlhf calls this module
at run time.
"""
import math

import numpy as np

_EPS = np.finfo(np.float64).eps


def _rows(X):
    """Dense rows of a kernel matrix: an ndarray or (data, indices, indptr,
    n_cols)."""
    if isinstance(X, tuple):
        data, indices, indptr, n_cols = X
        dense = np.zeros((len(indptr) - 1, n_cols))
        for i in range(len(indptr) - 1):
            for k in range(indptr[i], indptr[i + 1]):
                dense[i, indices[k]] += data[k]
        return dense
    return np.asarray(X, dtype=np.float64)


def _log1pexp(z):
    return np.logaddexp(0.0, z)


def _sigmoid(z):
    return np.exp(-np.logaddexp(0.0, -z))


def logistic_loss_grad(X, y, sample_weight, w, fit_intercept, scale, alpha,
                       n_threads=0):
    """(loss, grad) of scale * sum s_i l(z_i, y_i) + alpha/2 ||w||^2."""
    X = _rows(X)
    y = np.asarray(y, dtype=np.float64)
    s = np.asarray(sample_weight, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    d = X.shape[1]
    coef = w[:d]
    b = w[d] if fit_intercept else 0.0
    z = X @ coef + b
    loss = scale * np.sum(s * (_log1pexp(z) - y * z)) + 0.5 * alpha * (
        coef @ coef)
    r = s * (_sigmoid(z) - y)
    grad = np.empty_like(w)
    grad[:d] = scale * (X.T @ r) + alpha * coef
    if fit_intercept:
        grad[d] = scale * r.sum()
    return float(loss), grad


def logistic_hessian(X, y, sample_weight, w, fit_intercept, scale, alpha):
    """Hessian of the logistic objective at w."""
    X = _rows(X)
    s = np.asarray(sample_weight, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    d = X.shape[1]
    if fit_intercept:
        X = np.column_stack([X, np.ones(len(X))])
    z = X @ w
    p = _sigmoid(z)
    h = scale * (X.T * (s * p * (1 - p))) @ X
    h[np.arange(d), np.arange(d)] += alpha
    return h


# -- L-BFGS (see csrc/lbfgs.c for the rules and references) ---------------

_LS_FTOL, _LS_GTOL, _LS_XTOL, _LS_STPMAX = 1e-3, 0.9, 0.1, 1e10


def _ls_step(st, stp, fp, dp):
    """One More-Thuente (1994) safeguarded step; st holds stx, fx, dx, sty,
    fy, dy, bracketed, stmin, stmax."""
    stx, fx, dx = st["stx"], st["fx"], st["dx"]
    sty, fy, dy = st["sty"], st["fy"], st["dy"]
    stpmin, stpmax = st["stmin"], st["stmax"]
    sgnd = dp * (dx / abs(dx))
    if fp > fx:
        theta = 3.0 * (fx - fp) / (stp - stx) + dx + dp
        s = max(abs(theta), abs(dx), abs(dp))
        gamma = s * math.sqrt((theta / s) ** 2 - (dx / s) * (dp / s))
        if stp < stx:
            gamma = -gamma
        p = (gamma - dx) + theta
        q = ((gamma - dx) + gamma) + dp
        stpc = stx + p / q * (stp - stx)
        stpq = stx + ((dx / ((fx - fp) / (stp - stx) + dx)) / 2.0) * (
            stp - stx)
        if abs(stpc - stx) < abs(stpq - stx):
            stpf = stpc
        else:
            stpf = stpc + (stpq - stpc) / 2.0
        st["bracketed"] = True
    elif sgnd < 0.0:
        theta = 3.0 * (fx - fp) / (stp - stx) + dx + dp
        s = max(abs(theta), abs(dx), abs(dp))
        gamma = s * math.sqrt((theta / s) ** 2 - (dx / s) * (dp / s))
        if stp > stx:
            gamma = -gamma
        p = (gamma - dp) + theta
        q = ((gamma - dp) + gamma) + dx
        stpc = stp + p / q * (stx - stp)
        stpq = stp + (dp / (dp - dx)) * (stx - stp)
        stpf = stpc if abs(stpc - stp) > abs(stpq - stp) else stpq
        st["bracketed"] = True
    elif abs(dp) < abs(dx):
        theta = 3.0 * (fx - fp) / (stp - stx) + dx + dp
        s = max(abs(theta), abs(dx), abs(dp))
        gamma = s * math.sqrt(max(0.0, (theta / s) ** 2 - (dx / s) * (
            dp / s)))
        if stp > stx:
            gamma = -gamma
        p = (gamma - dp) + theta
        q = (gamma + (dx - dp)) + gamma
        r = p / q
        if r < 0.0 and gamma != 0.0:
            stpc = stp + r * (stx - stp)
        elif stp > stx:
            stpc = stpmax
        else:
            stpc = stpmin
        stpq = stp + (dp / (dp - dx)) * (stx - stp)
        if st["bracketed"]:
            stpf = stpc if abs(stpc - stp) < abs(stpq - stp) else stpq
            lim = stp + 0.66 * (sty - stp)
            stpf = min(lim, stpf) if stp > stx else max(lim, stpf)
        else:
            stpf = stpc if abs(stpc - stp) > abs(stpq - stp) else stpq
            stpf = max(stpmin, min(stpmax, stpf))
    else:
        if st["bracketed"]:
            theta = 3.0 * (fp - fy) / (sty - stp) + dy + dp
            s = max(abs(theta), abs(dy), abs(dp))
            gamma = s * math.sqrt((theta / s) ** 2 - (dy / s) * (dp / s))
            if stp > sty:
                gamma = -gamma
            p = (gamma - dp) + theta
            q = ((gamma - dp) + gamma) + dy
            stpf = stp + p / q * (sty - stp)
        elif stp > stx:
            stpf = stpmax
        else:
            stpf = stpmin
    if fp > fx:
        st.update(sty=stp, fy=fp, dy=dp)
    else:
        if sgnd < 0.0:
            st.update(sty=stx, fy=fx, dy=dx)
        st.update(stx=stp, fx=fp, dx=dp)
    return stpf


def _ls_next(st, f, g, stp):
    """Return ('fg', new step) or ('done', stp)."""
    ftest = st["finit"] + stp * st["gtest"]
    if st["stage"] == 1 and f <= ftest and g >= 0.0:
        st["stage"] = 2
    done = (
        (st["bracketed"] and (stp <= st["stmin"] or stp >= st["stmax"]))
        or (st["bracketed"] and st["stmax"] - st["stmin"]
            <= _LS_XTOL * st["stmax"])
        or (stp == _LS_STPMAX and f <= ftest and g <= st["gtest"])
        or (stp == 0.0 and (f > ftest or g >= st["gtest"]))
        or (f <= ftest and abs(g) <= _LS_GTOL * (-st["ginit"]))
    )
    if done:
        return "done", stp
    gt = st["gtest"]
    if st["stage"] == 1 and f <= st["fx"] and f > ftest:
        mod = dict(st, fx=st["fx"] - st["stx"] * gt, fy=st["fy"] - st["sty"]
                   * gt, dx=st["dx"] - gt, dy=st["dy"] - gt)
        stp = _ls_step(mod, stp, f - stp * gt, g - gt)
        st.update(stx=mod["stx"], sty=mod["sty"], bracketed=mod["bracketed"],
                  fx=mod["fx"] + mod["stx"] * gt,
                  fy=mod["fy"] + mod["sty"] * gt,
                  dx=mod["dx"] + gt, dy=mod["dy"] + gt)
    else:
        stp = _ls_step(st, stp, f, g)
    if st["bracketed"]:
        if abs(st["sty"] - st["stx"]) >= 0.66 * st["width1"]:
            stp = st["stx"] + 0.5 * (st["sty"] - st["stx"])
        st["width1"] = st["width"]
        st["width"] = abs(st["sty"] - st["stx"])
        st["stmin"] = min(st["stx"], st["sty"])
        st["stmax"] = max(st["stx"], st["sty"])
    else:
        st["stmin"] = stp + 1.1 * (stp - st["stx"])
        st["stmax"] = stp + 4.0 * (stp - st["stx"])
    stp = min(max(stp, 0.0), _LS_STPMAX)
    if st["bracketed"] and (stp <= st["stmin"] or stp >= st["stmax"] or
                            st["stmax"] - st["stmin"]
                            <= _LS_XTOL * st["stmax"]):
        stp = st["stx"]
    return "fg", stp


def lbfgs_minimize(fun, x0, m=10, gtol=1e-5, ftol=2.220446049250313e-09,
                   max_iter=15000, maxls=20):
    """Minimise fun(x) -> (f, g); returns (x, f, g, n_iter, n_fev, status)
    with status 0 (gtol), 1 (ftol), 2 (max_iter) or 3 (line search)."""
    x = np.array(x0, dtype=np.float64)
    f, g = fun(x.copy())
    g = np.array(g, dtype=np.float64)
    n_iter, n_fev = 0, 1
    if not (np.isfinite(f) and np.isfinite(g).all()):
        raise ValueError("lbfgs_minimize: the objective or its gradient is "
                         "not finite (NaN or infinity) at the starting point")
    if np.max(np.abs(g), initial=0.0) <= gtol:
        return x, f, g, 0, n_fev, 0
    pairs = []  # (s, y, rho), oldest first
    gamma = 1.0
    while True:
        d = -g.copy()
        if pairs:
            alphas = []
            for s, y, rho in reversed(pairs):
                a = rho * (s @ d)
                alphas.append(a)
                d -= a * y
            d *= gamma
            for (s, y, rho), a in zip(pairs, reversed(alphas)):
                d += (a - rho * (y @ d)) * s
        stp = min(1.0 / math.sqrt(d @ d), _LS_STPMAX) if n_iter == 0 else 1.0
        x_old, g_old, f_old = x.copy(), g.copy(), f
        gd_old = gd = float(g @ d)
        ok = False
        if gd_old < 0.0:
            st = dict(bracketed=False, stage=1, finit=f, ginit=gd_old,
                      gtest=_LS_FTOL * gd_old, width=_LS_STPMAX,
                      width1=_LS_STPMAX / 0.5, stx=0.0, fx=f, dx=gd_old,
                      sty=0.0, fy=f, dy=gd_old, stmin=0.0,
                      stmax=stp + 4.0 * stp)
            for _ in range(maxls):
                x = x_old + stp * d
                n_fev += 1
                f, g = fun(x.copy())
                g = np.array(g, dtype=np.float64)
                gd = float(g @ d)
                task, stp_next = _ls_next(st, f, gd, stp)
                if task == "done":
                    ok = True
                    break
                stp = stp_next
        if not ok:
            x, g, f = x_old, g_old, f_old
            if not pairs:
                return x, f, g, n_iter, n_fev, 3
            pairs, gamma = [], 1.0
            continue
        n_iter += 1
        if n_iter >= max_iter:
            return x, f, g, n_iter, n_fev, 2
        if np.max(np.abs(g)) <= gtol:
            return x, f, g, n_iter, n_fev, 0
        if f_old - f <= ftol * max(abs(f_old), abs(f), 1.0):
            return x, f, g, n_iter, n_fev, 1
        sy = (gd - gd_old) * stp
        if sy <= _EPS * (-gd_old * stp):
            continue
        s, y = stp * d, g - g_old
        pairs.append((s, y, 1.0 / sy))
        if len(pairs) > m:
            pairs.pop(0)
        gamma = sy / (y @ y)


def _newton(fg, hess, x0, gtol, max_iter):
    """Newton's method as csrc/newton.c: Cholesky with a Levenberg ridge,
    Armijo backtracking, gradient test relative to the start."""
    w = np.array(x0, dtype=np.float64)
    n = len(w)
    f, g = fg(w)
    n_iter, n_fev = 0, 1
    threshold = gtol * max(1.0, np.max(np.abs(g), initial=0.0))
    while True:
        if np.max(np.abs(g), initial=0.0) <= threshold:
            return w, f, g, n_iter, n_fev, 0
        if n_iter >= max_iter:
            return w, f, g, n_iter, n_fev, 2
        H = hess(w)
        tau = 0.0
        while True:
            try:
                L = np.linalg.cholesky(H + tau * np.eye(n))
                break
            except np.linalg.LinAlgError:
                tau = 1e-12 * max(np.max(np.diag(H)), 1e-300) if tau == 0 \
                    else tau * 10
        d = -np.linalg.solve(L.T, np.linalg.solve(L, g))
        gd = g @ d
        if not gd < 0:
            return w, f, g, n_iter, n_fev, 3
        unmeasurable = -gd <= 4 * _EPS * max(1.0, abs(f))
        t = 1.0
        for _ in range(60):
            n_fev += 1
            f_new, g_new = fg(w + t * d)
            if unmeasurable:
                if not np.max(np.abs(g_new)) < np.max(np.abs(g)):
                    return w, f, g, n_iter, n_fev, 1
                break
            if f_new <= f + 1e-4 * t * gd:
                break
            t *= 0.5
        else:
            return w, f, g, n_iter, n_fev, 3
        w, f, g = w + t * d, f_new, g_new
        n_iter += 1


def _newton_logistic(X, y, sample_weight, fit_intercept, scale, alpha, gtol,
                     max_iter):
    def fg(w):
        return logistic_loss_grad(X, y, sample_weight, w, fit_intercept,
                                  scale, alpha)

    def hess(w):
        return logistic_hessian(X, y, sample_weight, w, fit_intercept, scale,
                                alpha)

    n = _rows(X).shape[1] + (1 if fit_intercept else 0)
    return _newton(fg, hess, np.zeros(n), gtol, max_iter)


def logistic_fit(X, y, sample_weight, fit_intercept, scale, alpha, solver,
                 gtol, ftol, max_iter, maxls, m=10, n_threads=0):
    """Minimise the logistic objective from zero; returns (w, loss, grad,
    n_iter, n_fev, status) as the kernel does."""
    if solver == "newton":
        return _newton_logistic(X, y, sample_weight, fit_intercept, scale,
                                alpha, gtol, max_iter)

    def fg(w):
        return logistic_loss_grad(X, y, sample_weight, w, fit_intercept,
                                  scale, alpha)

    n = _rows(X).shape[1] + (1 if fit_intercept else 0)
    return lbfgs_minimize(fg, np.zeros(n), m=m, gtol=gtol, ftol=ftol,
                          max_iter=max_iter, maxls=maxls)


def reweight(policy, rewards, eta, eps):
    """softmax(log(policy + eps) + eta * (rewards - mean(rewards))), rows."""
    policy = np.asarray(policy, dtype=np.float64)
    rewards = np.asarray(rewards, dtype=np.float64)
    # softmax ignores a shift of the logits: the rewards are taken relative
    # to the best response's (the largest eta * r), which keeps its term
    # exactly 0 (and the policy's log visible) however large eta * r is
    if eta > 0:
        best = rewards.max(axis=-1, keepdims=True)
    elif eta < 0:
        best = rewards.min(axis=-1, keepdims=True)
    else:
        best = rewards
    gap = rewards - best
    with np.errstate(invalid="ignore"):
        term = np.where(gap == 0, 0.0, eta * gap)
    logits = np.log(policy + eps) + term
    logits -= logits.max(axis=-1, keepdims=True)
    weights = np.exp(logits)
    return weights / weights.sum(axis=-1, keepdims=True)


# -- Bradley-Terry and Plackett-Luce (csrc/bradley_terry.c) ---------------
# The losses are written from the models' probabilities (Bradley & Terry
# 1952; Rao & Kupper 1967; Davidson 1970; Plackett 1975), not from the
# kernel's rearranged forms.

def _bt_features(features, n_items):
    if features is None:
        return np.eye(n_items)
    return _rows(features)


def _bt_pair_terms(ra, rb, margin, tied, tie_model, u):
    """-log P of each comparison and its derivatives in r_a, r_b, u."""
    d = ra - rb - np.where(tied, 0.0, margin)
    if tie_model == 0:
        # P(a > b) = sigmoid(d); a tie is half a win each way
        loss = np.where(tied, 0.5 * (np.logaddexp(0, -d) + np.logaddexp(0, d)),
                        np.logaddexp(0, -d))
        da = np.where(tied, 0.5 * (_sigmoid(d) - _sigmoid(-d)), -_sigmoid(-d))
        return loss, da, -da, np.zeros_like(d)
    if tie_model == 1:
        # P(a > b) = pi_a / (pi_a + theta pi_b), theta = exp(kappa),
        # P(tie) = (theta^2 - 1) pi_a pi_b / ((pi_a + theta pi_b)
        #          (theta pi_a + pi_b)), pi = exp(r)
        kappa = math.exp(u)
        strict = np.logaddexp(0, kappa - d)
        tie = (-np.log(np.expm1(2 * kappa)) + np.logaddexp(ra, kappa + rb)
               + np.logaddexp(kappa + ra, rb) - ra - rb)
        loss = np.where(tied, tie, strict)
        da_strict = -_sigmoid(kappa - d)
        da_tie = _sigmoid(ra - kappa - rb) + _sigmoid(kappa + ra - rb) - 1
        db_tie = _sigmoid(rb - kappa - ra) + _sigmoid(kappa + rb - ra) - 1
        dk_tie = (-2 - 2 / np.expm1(2 * kappa) + _sigmoid(kappa + rb - ra)
                  + _sigmoid(kappa + ra - rb))
        da = np.where(tied, da_tie, da_strict)
        db = np.where(tied, db_tie, -da_strict)
        dk = np.where(tied, dk_tie, -da_strict)
        return loss, da, db, dk * kappa
    # Davidson: P(a > b) = pi_a / (pi_a + pi_b + nu sqrt(pi_a pi_b)),
    # P(tie) = nu sqrt(pi_a pi_b) / (...), nu = exp(u)
    ra_m = ra - np.where(tied, 0.0, margin)
    mid = u + 0.5 * (ra_m + rb)
    top = np.maximum(np.maximum(ra_m, rb), mid)
    ea, eb, em = np.exp(ra_m - top), np.exp(rb - top), np.exp(mid - top)
    total = ea + eb + em
    lse = top + np.log(total)
    qa, qb, qm = ea / total, eb / total, em / total
    loss = np.where(tied, lse - mid, lse - ra_m)
    da = qa + 0.5 * qm - np.where(tied, 0.5, 1.0)
    db = qb + 0.5 * qm - np.where(tied, 0.5, 0.0)
    du = qm - np.where(tied, 1.0, 0.0)
    return loss, da, db, du


def _pl_group(r):
    """-log P of one Plackett-Luce ranking (scores best first) and its
    gradient: sum over positions of log sum_{j >= k} e^r_j - r_k."""
    loss, grad = 0.0, np.zeros(len(r))
    for k in range(len(r) - 1):
        tail = r[k:]
        top = tail.max()
        weights = np.exp(tail - top)
        loss += top + math.log(weights.sum()) - r[k]
        grad[k:] += weights / weights.sum()
        grad[k] -= 1.0
    return loss, grad


def bt_loss_grad(problem, x, n_threads=0):
    """(loss, grad) of sum_p s_p loss_p(F w) + alpha/2 ||w||^2, with the tie
    parameter u last in x when a tie model is on; with a 2-d x, (losses,
    grads) at each of its rows."""
    if np.ndim(x) == 2:
        rows = [bt_loss_grad(problem, row) for row in np.asarray(x)]
        return (np.array([loss for loss, _ in rows]),
                np.array([grad for _, grad in rows]).reshape(np.shape(x)))
    (features, n_items, likelihood, data, sample_weight, margin, tie,
     tie_model, alpha) = problem
    F = _bt_features(features, n_items)
    x = np.asarray(x, dtype=np.float64)
    n_coef = F.shape[1]
    w = x[:n_coef]
    u = x[n_coef] if tie_model else 0.0
    r = F @ w
    data = np.asarray(data, dtype=np.int64)
    s = (np.ones(len(data)) if sample_weight is None
         else np.asarray(sample_weight, dtype=np.float64))
    g_items = np.zeros(n_items)
    du = 0.0
    if likelihood == 0:
        a, b = data[:, 0], data[:, 1]
        m = np.zeros(len(data)) if margin is None else np.asarray(margin)
        tied = (np.zeros(len(data), bool) if tie is None
                else np.asarray(tie).astype(bool))
        loss_p, da, db, dup = _bt_pair_terms(r[a], r[b], m, tied, tie_model,
                                             u)
        loss = float(np.sum(s * loss_p))
        np.add.at(g_items, a, s * da)
        np.add.at(g_items, b, s * db)
        du = float(np.sum(s * dup))
    else:
        loss = 0.0
        for group, weight in zip(data, s):
            items = group[group >= 0]
            lg, gg = _pl_group(r[items])
            loss += weight * lg
            np.add.at(g_items, items, weight * gg)
    grad = np.empty(len(x))
    grad[:n_coef] = F.T @ g_items + alpha * w
    if tie_model:
        grad[n_coef] = du
    return loss + 0.5 * alpha * float(w @ w), grad


def pair_counts(rewards, pairs, ties=None, n_threads=0):
    """(first item's reward higher, rewards equal, pairs counted) over the
    pairs not tied."""
    r = np.asarray(rewards, dtype=np.float64)
    pairs = np.clip(np.asarray(pairs, dtype=np.int64), 0, len(r) - 1)
    keep = (np.ones(len(pairs), bool) if ties is None
            else ~np.asarray(ties).astype(bool))
    d = r[pairs[keep, 0]] - r[pairs[keep, 1]]
    return int(np.sum(d > 0)), int(np.sum(d == 0)), int(keep.sum())


def bt_hessian(problem, x):
    """The Hessian as central differences of bt_loss_grad's gradient (plus
    the kernel's mean(diag) 1 1^T / n_items for free strengths without a
    penalty): an oracle to about 1e-7."""
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    H = np.empty((n, n))
    for j in range(n):
        h = 1e-5 * max(1.0, abs(x[j]))
        up, down = x.copy(), x.copy()
        up[j] += h
        down[j] -= h
        H[:, j] = (bt_loss_grad(problem, up)[1]
                   - bt_loss_grad(problem, down)[1]) / (2 * h)
    H = 0.5 * (H + H.T)
    features, n_items, alpha = problem[0], problem[1], problem[8]
    if features is None and alpha == 0:
        diag = np.diag(H)[:n_items]
        c = (diag.mean() if diag.mean() > 0 else 1.0) / n_items
        H[:n_items, :n_items] += c
    return H
# constrained.c ------------------------------------------------------------

def _constrained_policy_at(logp, r_shift, c_shift, beta, lam):
    """Policy at lam, its expected cost and cost variance (shifted costs)."""
    support = logp > -np.inf
    u = np.where(support, r_shift - lam * c_shift, -np.inf)
    u_max = u[support].max()
    z = np.full(logp.shape, -np.inf)
    # (u - u_max) <= 0 over a tiny beta may overflow to -inf: exp gives the
    # intended 0
    with np.errstate(over="ignore"):
        z[support] = logp[support] + (u[support] - u_max) / beta
    w = np.exp(z - z.max())
    policy = w / w.sum()
    mean = float(policy @ c_shift)
    var = float(policy @ (c_shift - mean) ** 2)
    return policy, mean, var


def bt_fit(problem, x0, solver, tol, max_iter, n_threads=0):
    """Minimise the preference objective from x0 as the kernel does:
    L-BFGS (m = 10, maxls = 50, ftol = 64 eps) with the gradient test
    relative to the start, or Newton on bt_hessian (here a difference
    Hessian, so its steps agree with the kernel's to about 1e-7).
    Returns (x, loss, grad, n_iter, n_fev, status)."""
    def fg(x):
        return bt_loss_grad(problem, x)

    if solver == "newton":
        return _newton(fg, lambda x: bt_hessian(problem, x), x0, tol,
                       max_iter)
    g0 = fg(np.asarray(x0, dtype=np.float64))[1]
    gtol = tol * max(1.0, np.max(np.abs(g0), initial=0.0))
    return lbfgs_minimize(fg, x0, m=10, gtol=gtol, ftol=64 * _EPS,
                          max_iter=max_iter, maxls=50)


def _two_sum(a, b):
    """(s, e) with s + e = a + b exactly (Knuth's TwoSum), elementwise."""
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


def _two_prod(a, b):
    """(p, e) with p + e = a * b exactly; e from exact rationals."""
    from fractions import Fraction

    a = np.broadcast_to(np.asarray(a, dtype=np.float64), np.shape(b))
    p = a * b
    e = np.array([float(Fraction(x) * Fraction(y) - Fraction(z))
                  if np.isfinite(z) else 0.0
                  for x, y, z in zip(a.ravel(), np.ravel(b), p.ravel())])
    return p, e.reshape(p.shape)


def _constrained_near(logp, c_shift, d_hi, d_lo, c_hi, c_lo, beta, t):
    """Policy at lam0 + t from the exact logits (D - t C) / beta."""
    support = logp > -np.inf
    p, ep = _two_prod(t, c_hi)
    s, e = _two_sum(d_hi, -p)
    x = s + (e + d_lo - ep - t * c_lo)
    x_max = x[support].max()
    z = np.full(logp.shape, -np.inf)
    z[support] = logp[support] + (x[support] - x_max) / beta
    w = np.exp(z - z.max())
    policy = w / w.sum()
    mean = float(policy @ c_shift)
    var = float(policy @ (c_shift - mean) ** 2)
    return policy, mean, var


def _constrained_refine(logp, c_shift, d, beta, lam0, b, tol):
    """Solve E[c] = b for t near lam0 (bracket grown by doubling)."""
    lo, hi, t = -np.inf, np.inf, 0.0
    step_old = step = np.inf
    grow = max(np.finfo(np.float64).eps * lam0, np.finfo(np.float64).tiny)
    policy, mean, var = _constrained_near(logp, c_shift, *d, beta, t)
    for _ in range(5000):
        f = mean - b
        if abs(f) <= tol:
            return policy, lam0 + t
        if f > 0:
            lo = t
        else:
            hi = t
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            nxt = t + (beta * f / var if var > 0 else np.nan)
        newton_ok = (var > 0 and lo < nxt < hi
                     and abs(nxt - t) <= 0.5 * abs(step_old))
        step_old = step
        if not newton_ok:
            if hi == np.inf:
                nxt = lo + grow
                grow *= 2.0
            elif lo == -np.inf:
                nxt = hi - grow
                grow *= 2.0
            else:
                nxt = lo + 0.5 * (hi - lo)
            if not np.isfinite(nxt):
                raise ValueError("the multiplier exceeds DBL_MAX")
        if not lo < nxt < hi:
            p_lo, m_lo, _ = _constrained_near(logp, c_shift, *d, beta, lo)
            p_hi, m_hi, _ = _constrained_near(logp, c_shift, *d, beta, hi)
            w = min(max((b - m_hi) / (m_lo - m_hi), 0.0), 1.0)
            return w * p_lo + (1.0 - w) * p_hi, lam0 + (lo if w >= 0.5
                                                        else hi)
        step = nxt - t
        t = nxt
        policy, mean, var = _constrained_near(logp, c_shift, *d, beta, t)
    raise ArithmeticError("the multiplier did not converge")


def _constrained_row(p, r, c, beta, budget):
    """One row of constrained_policy: (policy, multiplier)."""
    support = p > 0
    c_min, c_max = c[support].min(), c[support].max()
    if budget < c_min:
        raise ValueError(f"budget {float(budget)!r} is below the least "
                         f"achievable cost {float(c_min)!r}")
    with np.errstate(divide="ignore"):
        logp = np.where(support, np.log(p), -np.inf)
    r_shift = r - r[support].max()
    c_shift = c - c_min
    b = budget - c_min
    policy, mean, var = _constrained_policy_at(logp, r_shift, c_shift, beta,
                                               0.0)
    if mean <= b:
        return policy, 0.0
    if b == 0.0:
        z = np.full(p.shape, -np.inf)
        cheapest = support & (c_shift == 0.0)
        z[cheapest] = logp[cheapest] + r_shift[cheapest] / beta
        w = np.exp(z - z.max())
        return w / w.sum(), np.inf
    eps = np.finfo(np.float64).eps
    tol = 8.0 * eps * (c_max - c_min) * (1.0 + np.log(p.size))
    # 1. lam to working accuracy
    lo, hi = 0.0, np.inf
    lam, step_old, step = 0.0, np.inf, np.inf
    for _ in range(5000):
        f = mean - b
        if abs(f) <= tol:
            break
        if f > 0:
            lo = lam
        else:
            hi = lam
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            newton = beta * f / var if var > 0 else np.nan
        nxt = lam + newton
        newton_ok = (var > 0 and lo < nxt < hi
                     and abs(nxt - lam) <= 0.5 * abs(step_old))
        step_old = step
        if not newton_ok:
            if hi == np.inf:
                if lo > 0:
                    nxt = 2.0 * lo
                elif np.isfinite(newton) and newton > 0:
                    nxt = newton
                else:
                    nxt = 1.0
                if not np.isfinite(nxt):
                    raise ValueError("the multiplier exceeds DBL_MAX")
            elif lo > 0 and hi > 4.0 * lo:
                nxt = np.sqrt(lo) * np.sqrt(hi)
            elif lo == 0 and hi > 4.0 * np.finfo(np.float64).tiny:
                nxt = 0.25 * hi
            else:
                nxt = lo + 0.5 * (hi - lo)
        if not lo < nxt < hi:
            lam = lo
            break
        step = nxt - lam
        lam = nxt
        policy, mean, var = _constrained_policy_at(logp, r_shift, c_shift,
                                                   beta, lam)
    else:
        raise ArithmeticError("the multiplier did not converge")
    # 2. the last digits: D = (r - r_m) - lam (c - c_m), C = c - c_m as
    # unevaluated sums hi + lo, around the anchor m of largest r - lam c
    u = np.where(support, r - lam * c, -np.inf)
    m = int(np.argmax(u))
    sr, er = _two_sum(r, -r[m])
    c_hi, c_lo = _two_sum(c, -c[m])
    pc, epc = _two_prod(lam, c_hi)
    s, e = _two_sum(sr, -pc)
    tail = e + er - epc - lam * c_lo
    d_hi = s + tail
    d_lo = tail - (d_hi - s)
    return _constrained_refine(logp, c_shift, (d_hi, d_lo, c_hi, c_lo), beta,
                               lam, b, tol)


def constrained_policy(reference_policy, rewards, costs, budget, beta):
    """argmax E_pi[r] - beta KL(pi || pi_ref) s.t. E_pi[c] <= budget, rows;
    returns (policy, multiplier) through the same safeguarded Newton on the
    dual as the kernel, and the same refinement with exact logits (error
    terms of products from exact rationals rather than a fused
    multiply-add)."""
    reference_policy = np.asarray(reference_policy, dtype=np.float64)
    rewards = np.asarray(rewards, dtype=np.float64)
    costs = np.asarray(costs, dtype=np.float64)
    budget = np.asarray(budget, dtype=np.float64)
    policy = np.empty_like(reference_policy)
    multiplier = np.empty(reference_policy.shape[0])
    for i in range(reference_policy.shape[0]):
        policy[i], multiplier[i] = _constrained_row(
            reference_policy[i], rewards[i], costs[i], float(beta),
            float(budget[i]))
    return policy, multiplier
# -- policy optimisation (see csrc/policy_opt.c) --------------------------

_KL_K1, _KL_K3 = 1, 3
_BASELINE_MEAN, _BASELINE_RLOO, _BASELINE_GRPO = 0, 1, 2
_DPO_SIGMOID, _DPO_ROBUST, _DPO_HINGE, _DPO_IPO = 0, 1, 2, 3


def log_softmax(logits, out=None):
    """(logp, p): log-softmax along rows and its exponential, written into
    out=(logp, p) when given."""
    logits = np.asarray(logits, dtype=np.float64)
    if not (np.all(logits < np.inf) and np.all(np.max(logits, axis=1)
                                                > -np.inf)):
        raise ValueError("a row of logits holds NaN or +inf, or is all -inf")
    top = logits.max(axis=1, keepdims=True)
    shifted = logits - top
    logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    if out is None:
        return logp, np.exp(logp)
    out[0][...] = logp
    out[1][...] = np.exp(logp)
    return out


_GAMMA = np.uint64(0x9E3779B97F4A7C15)


def _splitmix_uniform(seed, counters):
    """Output number `counters` of SplitMix64 from `seed`, in [0, 1)."""
    z = np.uint64(seed) + (counters.astype(np.uint64) + np.uint64(1)) * _GAMMA
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * 2.0 ** -53


def sample_categorical(policy, n_samples, seed, counter):
    """Inverse-CDF samples, shape (n_rows, n_samples), from SplitMix64."""
    policy = np.asarray(policy, dtype=np.float64)
    n, k = policy.shape
    cum = np.cumsum(policy, axis=1)  # left to right, as the kernel
    counters = (np.uint64(counter)
                + np.arange(n * n_samples, dtype=np.uint64)).reshape(
                    n, n_samples)
    target = _splitmix_uniform(seed, counters) * cum[:, -1:]
    below = target[:, :, None] < cum[:, None, :]
    last = k - 1 - np.argmax(policy[:, ::-1] > 0, axis=1)
    return np.where(below.any(axis=2), below.argmax(axis=2),
                    last[:, None]).astype(np.int64)


def _kl_sample(d, kl_kind):
    return np.expm1(-d) + d if kl_kind == _KL_K3 else d


def shape_rewards(rewards, logp, ref_logp, actions, kl_coef, kl_kind):
    """(shaped rewards, log-probabilities) of the sampled responses."""
    actions = np.asarray(actions, dtype=np.int64)
    r = np.take_along_axis(np.asarray(rewards, dtype=np.float64), actions, 1)
    lp = np.take_along_axis(np.asarray(logp, dtype=np.float64), actions, 1)
    ref = np.take_along_axis(np.asarray(ref_logp, dtype=np.float64), actions,
                             1)
    if kl_coef != 0.0:
        live = lp > -np.inf
        with np.errstate(invalid="ignore"):
            penalty = kl_coef * _kl_sample(lp - ref, kl_kind)
        r = np.where(live, r - np.where(live, penalty, 0.0), r)
    return r, lp


def advantages(rewards, baseline, eps):
    """Group-baseline advantages of (n_groups, group_size) rewards."""
    r = np.asarray(rewards, dtype=np.float64)
    s = r.shape[1]
    if baseline != _BASELINE_MEAN and s < 2:
        raise ValueError("groups of at least 2 responses are needed")
    total = r.sum(axis=1, keepdims=True)
    mean = total / s
    if baseline == _BASELINE_RLOO:
        return r - (total - r) / (s - 1)
    if baseline == _BASELINE_GRPO:
        std = np.sqrt(((r - mean) ** 2).sum(axis=1, keepdims=True) / (s - 1))
        constant = r.min(axis=1, keepdims=True) == r.max(axis=1,
                                                         keepdims=True)
        return np.where(constant, 0.0, (r - mean) / (std + eps))
    return r - mean


def ppo_loss_grad(logits, ref_logp, rows, actions, weights, old_logp,
                  advantages, clip, kl_coef, kl_kind):
    """(loss, grad, clip_fraction) of PPO's clipped surrogate."""
    logits = np.asarray(logits, dtype=np.float64)
    rows = np.asarray(rows, dtype=np.int64)
    a = np.asarray(actions, dtype=np.int64)[rows]
    w = np.asarray(weights, dtype=np.float64)[rows]
    old = np.asarray(old_logp, dtype=np.float64)[rows]
    adv = np.asarray(advantages, dtype=np.float64)[rows]
    logp, p = log_softmax(logits[rows])
    live = w != 0
    lp = np.take_along_axis(logp, a, 1)
    with np.errstate(invalid="ignore", over="ignore"):
        rho = np.where(live, np.exp(lp - old), 0.0)
    plain = rho * adv
    clipped = np.clip(rho, 1 - clip, 1 + clip) * adv
    term = -np.minimum(plain, clipped)
    coef = np.where(plain <= clipped, -adv * rho, 0.0)
    if kl_coef != 0.0:
        ref = np.take_along_axis(np.asarray(ref_logp, dtype=np.float64)[rows],
                                 a, 1)
        d = np.where(live, lp - ref, 0.0)
        k = _kl_sample(d, kl_kind)
        dk = -np.expm1(-d) if kl_kind == _KL_K3 else 1.0
        term = term + kl_coef * rho * k
        coef = coef + kl_coef * rho * (k + dk)
    m = max(len(rows), 1)
    coef = np.where(live, coef * w / m, 0.0)
    grad_rows = -coef.sum(axis=1, keepdims=True) * p
    np.add.at(grad_rows, (np.arange(len(rows))[:, None], a), coef)
    grad = np.zeros_like(logits)
    grad[rows] = grad_rows
    loss = np.where(live, w * term, 0.0).sum() / m
    clip_fraction = np.where(live & (np.abs(rho - 1) > clip), w, 0.0).sum() / m
    return float(loss), grad, float(clip_fraction)


def dpo_loss_grad(logits, ref_logp, comparisons, weights, beta, loss_kind,
                  label_smoothing):
    """(loss, grad, (chosen, rejected, accuracy)) of a DPO-family loss."""
    logits = np.asarray(logits, dtype=np.float64)
    ref_logp = np.asarray(ref_logp, dtype=np.float64)
    c = np.asarray(comparisons, dtype=np.int64)
    w = np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    logp, _ = log_softmax(logits)
    x, yw, yl = c[:, 0], c[:, 1], c[:, 2]
    chosen = logp[x, yw] - ref_logp[x, yw]
    rejected = logp[x, yl] - ref_logp[x, yl]
    d = (logits[x, yw] - ref_logp[x, yw]) - (logits[x, yl] - ref_logp[x, yl])
    h = beta * d
    e = label_smoothing
    sig = _sigmoid
    if loss_kind == _DPO_SIGMOID:
        loss = (1 - e) * _log1pexp(-h) + e * _log1pexp(h)
        dl_dd = beta * (-(1 - e) * sig(-h) + e * sig(h))
    elif loss_kind == _DPO_ROBUST:
        loss = ((1 - e) * _log1pexp(-h) - e * _log1pexp(h)) / (1 - 2 * e)
        dl_dd = beta * (-(1 - e) * sig(-h) - e * sig(h)) / (1 - 2 * e)
    elif loss_kind == _DPO_HINGE:
        loss = np.maximum(0.0, 1.0 - h)
        dl_dd = np.where(h < 1.0, -beta, 0.0)
    else:
        loss = (d - 0.5 / beta) ** 2
        dl_dd = 2.0 * (d - 0.5 / beta)
    grad = np.zeros_like(logits)
    np.add.at(grad, (x, yw), w * dl_dd)
    np.add.at(grad, (x, yl), -w * dl_dd)
    stats = (float(w @ chosen), float(w @ rejected), float(w @ (d > 0)))
    return float(w @ loss), grad, stats


def policy_stats(logp, ref_logp, rewards):
    """Row means of E_pi[r], KL(pi || pi_ref) and H(pi)."""
    logp = np.asarray(logp, dtype=np.float64)
    p = np.exp(logp)
    live = p > 0
    with np.errstate(invalid="ignore"):
        reward = np.where(live, p * rewards, 0.0).sum(axis=1)
        kl = np.where(live, p * (logp - ref_logp), 0.0).sum(axis=1)
        entropy = -np.where(live, p * logp, 0.0).sum(axis=1)
    return float(reward.mean()), float(kl.mean()), float(entropy.mean())


def adam_step(theta, grad, m, v, lr, beta1, beta2, eps, t):
    """One Adam step; new (theta, m, v)."""
    m = beta1 * np.asarray(m, dtype=np.float64) + (1 - beta1) * grad
    v = beta2 * np.asarray(v, dtype=np.float64) + (1 - beta2) * grad * grad
    theta = np.asarray(theta, dtype=np.float64) - lr * (
        m / (1 - beta1 ** t)) / (np.sqrt(v / (1 - beta2 ** t)) + eps)
    return theta, m, v


def ppo_adam_step(theta, m, v, ref_logp, rows, actions, weights, old_logp,
                  advantages, clip, kl_coef, kl_kind, lr, beta1, beta2, eps,
                  t):
    """ppo_loss_grad at logits ref_logp + theta, then adam_step; updates
    theta, m and v in place and returns (loss, clip_fraction)."""
    loss, grad, clip_fraction = ppo_loss_grad(
        ref_logp + theta, ref_logp, rows, actions, weights, old_logp,
        advantages, clip, kl_coef, kl_kind)
    theta[...], m[...], v[...] = adam_step(theta, grad, m, v, lr, beta1,
                                           beta2, eps, t)
    return loss, clip_fraction


# --------------------------------------------------------------------------
# sequences (rlhf.sequences): tokens in [0, V), one of them the end token;
# the W = V - 1 other tokens are words, word c the c-th smallest of them.
# A state is the trie index of the last min(t, depth) words of the prefix
# (offset[j] = sum_{i < j} W**i for a context of j words); a position is a
# choice when it lies before the end and below T - 1 (the end at T - 1 is
# forced).  Flat token arrays mark positions that are not choices with the
# state -1, which every kernel skips.


def _word(token, end_token):
    """The word number of a token (the end token counts as word 0: it never
    enters a context, since the sequence stops there)."""
    token = np.asarray(token, dtype=np.int64)
    return np.where(token > end_token, token - 1,
                    np.where(token == end_token, 0, token))


def _offsets(n_words, n_levels):
    return np.array([sum(n_words ** i for i in range(j))
                     for j in range(n_levels + 1)], dtype=np.int64)


def sample_sequences(probs, n, max_length, seed, end_token, depth):
    """(tokens (n, T), lengths (n,)): sequence i's token t drawn by inverse
    CDF from row state(i, t) of ``probs`` (the first token whose cumulative
    probability, summed left to right, exceeds u times the row's total; the
    last token of positive probability when rounding leaves none) with
    uniform number i T + t of the SplitMix64 stream of ``seed``; tokens
    after the end are the end token."""
    probs = np.asarray(probs, dtype=np.float64)
    T, V = max_length, probs.shape[1]
    W = V - 1
    offsets = _offsets(W, max(depth, 0) + 1)
    full = W ** max(depth, 0)
    tokens = np.full((n, T), end_token, dtype=np.int64)
    lengths = np.full(n, T, dtype=np.int64)
    alive = np.arange(n, dtype=np.int64)  # sequences still writing
    code = np.zeros(n, dtype=np.int64)     # their context, base W
    last = V - 1 - np.argmax(probs[:, ::-1] > 0, axis=1)
    cumulative = np.cumsum(probs, axis=1)
    for t in range(T - 1):
        if alive.size == 0:
            break
        states = offsets[min(t, depth)] + code
        cum = cumulative[states]
        target = _splitmix_uniform(seed, alive * T + t) * cum[:, -1]
        below = target[:, None] < cum
        chosen = np.where(below.any(axis=1), below.argmax(axis=1),
                          last[states])
        tokens[alive, t] = chosen
        ended = chosen == end_token
        lengths[alive[ended]] = t + 1
        alive, chosen, code = alive[~ended], chosen[~ended], code[~ended]
        code = code * W + _word(chosen, end_token)
        if t + 1 > depth:
            code %= full
    return tokens, lengths


def sequence_log_probs(log_probs, tokens, lengths, end_token, depth):
    """(states (n, T) int64, logp (n, T)): the state of every position
    (-1 where it is not a choice) and log pi(a_t | s_t) there (0 elsewhere).
    """
    log_probs = np.asarray(log_probs, dtype=np.float64)
    tokens = np.asarray(tokens, dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    n, T = tokens.shape
    W = log_probs.shape[1] - 1
    offsets = _offsets(W, max(depth, 0) + 1)
    full = W ** max(depth, 0)
    states = np.full((n, T), -1, dtype=np.int64)
    logp = np.zeros((n, T))
    code = np.zeros(n, dtype=np.int64)
    for t in range(T - 1):
        live = t < lengths
        states[live, t] = offsets[min(t, depth)] + code[live]
        logp[live, t] = log_probs[states[live, t], tokens[live, t]]
        code = code * W + _word(tokens[:, t], end_token)
        if t + 1 > depth:
            code %= full
    return states, logp


def _logsumexp_rows(z):
    top = z.max(axis=1)
    with np.errstate(invalid="ignore"):
        return top + np.log(np.exp(z - top[:, None]).sum(axis=1))


def soft_backup(ref_log_probs, scaled_rewards, max_length, end_token):
    """(log pi* (P, V), v (N,)): the soft Bellman backup in units of beta,
    ``v(s) = log sum_a pi_ref(a|s) exp(q(s, a))`` with ``q(s, end) =
    r(s + end) / beta`` and ``q(s, a) = v(s + a)`` for a word, ``v = r /
    beta`` at T - 1 words, over the prefixes of the whole-prefix trie;
    ``log pi*(a|s) = log pi_ref(a|s) + q(s, a) - v(s)``."""
    ref = np.asarray(ref_log_probs, dtype=np.float64)
    r = np.asarray(scaled_rewards, dtype=np.float64)
    T, V = max_length, ref.shape[1]
    W = V - 1
    words = np.delete(np.arange(V), end_token)
    offsets = _offsets(W, T)
    values = r.copy()
    optimum = np.empty_like(ref)
    for t in range(T - 2, -1, -1):
        nodes = slice(offsets[t], offsets[t + 1])
        q = np.empty((offsets[t + 1] - offsets[t], V))
        q[:, end_token] = r[nodes]
        q[:, words] = values[offsets[t + 1]:offsets[t + 2]].reshape(-1, W)
        z = ref[nodes] + q
        values[nodes] = _logsumexp_rows(z)
        optimum[nodes] = z - values[nodes, None]
    return optimum, values


def gae(rewards, values, n_steps, gamma, lam):
    """(advantages, returns), each (n, T): generalised advantage estimation
    (Schulman et al. 2016) over the first n_steps[i] positions of row i,
    ``delta_t = r_t + gamma V_{t+1} - V_t`` with V = 0 after the last step,
    ``A_t = delta_t + gamma lam A_{t+1}``, returns ``A + V``; 0 beyond."""
    rewards = np.asarray(rewards, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    n, T = rewards.shape
    steps = np.arange(T) < np.asarray(n_steps)[:, None]
    r = np.where(steps, rewards, 0.0)
    value = np.where(steps, values, 0.0)
    adv = np.zeros((n, T))
    following, next_value = np.zeros(n), np.zeros(n)
    for t in range(T - 1, -1, -1):
        delta = r[:, t] + gamma * next_value - value[:, t]
        following = np.where(steps[:, t], delta + gamma * lam * following,
                             0.0)
        adv[:, t] = following
        next_value = value[:, t]
    return adv, np.where(steps, adv + value, 0.0)


def token_grad(log_probs, states, actions, coefs):
    """sum_i coefs_i (e_{a_i} - pi(. | s_i)) added into the rows s_i of a
    (S, V) table: the gradient in logits of sum_i coefs_i log pi(a_i|s_i);
    positions with a negative state are skipped."""
    log_probs = np.asarray(log_probs, dtype=np.float64)
    states = np.asarray(states, dtype=np.int64).ravel()
    actions = np.asarray(actions, dtype=np.int64).ravel()
    coefs = np.asarray(coefs, dtype=np.float64).ravel()
    live = states >= 0
    s, a, c = states[live], actions[live], coefs[live]
    grad = np.zeros_like(log_probs)
    np.add.at(grad, (s, a), c)
    totals = np.bincount(s, weights=c, minlength=log_probs.shape[0])
    return grad - totals[:, None] * np.exp(log_probs)


def token_ppo_loss_grad(logits, ref_log_probs, states, actions, weights,
                        old_logp, advantages, clip, kl_coef, kl_kind, scale):
    """(loss, grad (S, V), clip_fraction) of PPO's clipped surrogate summed
    over tokens, ``scale * sum_i w_i term_i``, with the terms of
    ppo_loss_grad; positions with a negative state or a zero weight are
    skipped."""
    logits = np.asarray(logits, dtype=np.float64)
    states = np.asarray(states, dtype=np.int64).ravel()
    live = states >= 0
    s = states[live]
    a = np.asarray(actions, dtype=np.int64).ravel()[live]
    w = np.asarray(weights, dtype=np.float64).ravel()[live]
    old = np.asarray(old_logp, dtype=np.float64).ravel()[live]
    adv = np.asarray(advantages, dtype=np.float64).ravel()[live]
    logp, _ = log_softmax(logits)
    lp = logp[s, a]
    on = w != 0
    with np.errstate(invalid="ignore", over="ignore"):
        rho = np.where(on, np.exp(lp - old), 0.0)
    plain = rho * adv
    clipped = np.clip(rho, 1 - clip, 1 + clip) * adv
    term = -np.minimum(plain, clipped)
    coef = np.where(plain <= clipped, -adv * rho, 0.0)
    if kl_coef != 0.0:
        # a skipped token of probability 0 has lp = ref = -inf
        with np.errstate(invalid="ignore"):
            d = np.where(on, lp - np.asarray(ref_log_probs)[s, a], 0.0)
        k = _kl_sample(d, kl_kind)
        dk = -np.expm1(-d) if kl_kind == _KL_K3 else 1.0
        term = term + kl_coef * rho * k
        coef = coef + kl_coef * rho * (k + dk)
    coef = np.where(on, coef * w * scale, 0.0)
    grad = token_grad(logp, s, a, coef)
    loss = scale * np.where(on, w * term, 0.0).sum()
    clip_fraction = scale * np.where(on & (np.abs(rho - 1) > clip), w,
                                     0.0).sum()
    return float(loss), grad, float(clip_fraction)


def token_ppo_adam_step(theta, m, v, ref_log_probs, states, actions,
                        weights, old_logp, advantages, clip, kl_coef,
                        kl_kind, scale, lr, beta1, beta2, eps, t):
    """token_ppo_loss_grad at logits ref_log_probs + theta, then adam_step
    over the whole table; theta, m and v in place; (loss, clip_fraction).
    """
    loss, grad, clip_fraction = token_ppo_loss_grad(
        ref_log_probs + theta, ref_log_probs, states, actions, weights,
        old_logp, advantages, clip, kl_coef, kl_kind, scale)
    theta[...], m[...], v[...] = adam_step(theta, grad, m, v, lr, beta1,
                                           beta2, eps, t)
    return loss, clip_fraction


def value_adam_step(values, m, v, states, weights, returns, old_values,
                    value_clip, scale, lr, beta1, beta2, eps, t):
    """PPO's clipped value loss ``scale * sum_i w_i max((V(s_i) - R_i)^2,
    (V_clip - R_i)^2) / 2`` with ``V_clip = old_i + clip(V(s_i) - old_i,
    -value_clip, value_clip)``, then Adam on the (S,) value table in place;
    returns the loss."""
    states = np.asarray(states, dtype=np.int64).ravel()
    live = states >= 0
    s = states[live]
    w = np.asarray(weights, dtype=np.float64).ravel()[live] * scale
    ret = np.asarray(returns, dtype=np.float64).ravel()[live]
    old = np.asarray(old_values, dtype=np.float64).ravel()[live]
    value = values[s]
    moved = np.clip(value - old, -value_clip, value_clip)
    plain = (value - ret) ** 2
    clipped = (old + moved - ret) ** 2
    use_plain = plain >= clipped
    # the clipped branch moves with V only inside the clip range
    inside = np.abs(value - old) < value_clip
    dvalue = np.where(use_plain, value - ret,
                      np.where(inside, old + moved - ret, 0.0))
    grad = np.bincount(s, weights=w * dvalue, minlength=values.shape[0])
    loss = 0.5 * float((w * np.maximum(plain, clipped)).sum())
    values[...], m[...], v[...] = adam_step(values, grad, m, v, lr, beta1,
                                            beta2, eps, t)
    return loss
