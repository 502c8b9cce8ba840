"""A physics-faithful TrackML event simulator writing the real file format.

:func:`simulate_event` returns the four frames of :func:`hepexp.data.trackml.io.load_event`
(hits, cells, particles, truth) as the TrackML detector would record them:

- **Event**: primary vertices with sigma_z 55 mm and sigma_xy 15 um, ~50 particles each (the
  real full events hold ~10k particles from ~200 vertices); charged species of minimum-bias /
  pile-up events (pi+- dominant, K+-, p/pbar, a few e+- and mu+-, signed PDG codes, charge from
  the species); a Tsallis pT spectrum fitted to the real primaries (pT > 0.1 GeV, median
  0.45 GeV, ~13% above 1 GeV; with the secondaries the whole event has median ~0.35 GeV);
  eta flat up to abs(eta) 1, then mildly falling to abs(eta) 4, as in the real primaries. A
  fraction of primaries (9% in the real event) come from displaced decays of neutral hadrons:
  their origin lies on a straight line along their direction, at an exponentially distributed
  transverse distance. As in the real event (where 92% of the primaries below 0.15 GeV have no
  hit), particles below ``pt_min_propagated`` = 0.15 GeV are listed but not propagated.
- **Propagation**: helices in a solenoid field (2 T, or the field falling with abs(z)), from
  surface to surface: barrel cylinders, endcap disks of all volumes on both sides, the beam
  pipe and the pixel support tube, with analytic helix-cylinder and helix-plane intersections.
  At every crossed surface: multiple scattering (Highland formula, the layer's x/X0 divided by
  the cosine of the incidence angle, applied as an angular kick), ionisation energy loss
  (Bethe 1/beta^2 scaling of the silicon minimum), and for hadrons a nuclear interaction with
  probability ``1 - exp(-x0_over_lambda * x/X0)`` that stops the particle and emits
  secondaries. *Loopers*: a particle stops once its helix has turned by ``max_turn`` (default
  pi: after its first half-turn, when it starts curling back in) or when it leaves the
  detector. The field is taken at the start of each step (one step per crossed surface).
- **Hits**: at each crossed layer the helix is intersected with the planar modules near the
  crossing (Newton on the exact helix for tilted barrel modules, analytic for disk modules),
  so overlapping modules give two hits in a layer as in the real detector; module, layer and
  volume ids come from the built-in geometry (:mod:`.geometry`). Measured positions are the
  true ones smeared in the module plane by pitch/sqrt(12) in u and v; a hit is lost with
  probability ``hit_inefficiency``, or when its cluster would exceed ``max_cluster_cells``
  (the real event has no longer cluster: no pixel-barrel hit beyond abs(eta) ~3). Cells: the
  pixels/strips under the track's path through the sensor, lengthened by a drift/sharing
  length; pixel values are the deposited charge, strip values 1.
- **Secondaries** (generation > 0): products of nuclear interactions (protons and pions,
  isotropic, exponential momentum spectrum, pT > 0.1 GeV) propagated like primaries, up to
  ``max_generation``.
- **Noise**: ``noise_fraction`` of all hits, uniform over modules (as the real noise is: its
  share per volume follows the module count) and uniform within a module.
- **Truth**: true position on the module mid-plane and true momentum at each hit; noise hits
  have particle_id 0, their own position as tx, ty, tz and zero momentum (the real files hold
  meaningless placeholder momenta there). particle_id bit fields: vertex_id (52-63),
  primary_id (36-51, number within the vertex), generation (24-35), secondary_id (12-23,
  counter within the primary's lineage and generation) and process (0-11: 0 for primaries, 2
  for products of nuclear interactions). ``weight`` follows the phase-2 scheme
  (:func:`hepexp.metrics.trackml.hit_weights`), sum 1 over the event.

Calibrated on the real 5% event (``benchmarks/trackml_realism.py``, docs/benchmarks.md): the
layer material (from the multiple-scattering angles and momentum losses between consecutive
hits), the effective nuclear-interaction rate ``x0_over_lambda`` = 0.6 with 4 products per
interaction (giving the real 21% of secondaries; it is higher than silicon's X0/lambda_I = 0.2
because it also stands for interactions of neutral hadrons, which are not simulated), the
cluster model and the charge scale of pixel cells.

Everything is vectorised over particles (loops over propagation steps and layers only). The
result is fully determined by ``(n_particles, seed, options)``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from functools import lru_cache, partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hepexp.data.cache import ensure_generated
from hepexp.data.trackml.geometry import (
    LONG_STRIP,
    PIXEL,
    SHORT_STRIP,
    BarrelLayer,
    DiskLayer,
    Geometry,
    module_frames,
    trackml_geometry,
)
from hepexp.data.trackml.io import PARTS, event_prefix, list_events, write_event
from hepexp.metrics.trackml import hit_weights
from hepexp.utils.parallel import ordered_map

#: bump when the simulator's output changes, so that cached datasets are regenerated
SIMULATOR_VERSION = 1

C_LIGHT = 0.299792458e-3  # GeV / (T mm): pT [GeV] = C_LIGHT * B [T] * R [mm]
X0_SILICON = 93.7  # mm
DEDX_MIN_SILICON = 0.3876e-3  # GeV / mm (1.664 MeV cm2/g x 2.329 g/cm3)
BETA2_AT_MINIMUM = 0.9245  # beta^2 at beta*gamma = 3.5, the minimum of the Bethe curve

#: PDG id -> (mass GeV, charge of the positive-PDG particle)
SPECIES = {
    11: (0.000511, -1),
    13: (0.105658, -1),
    211: (0.139570, 1),
    321: (0.493677, 1),
    2212: (0.938272, 1),
}
HADRONS = (211, 321, 2212)
PROCESS_PRIMARY, PROCESS_HADRONIC = 0, 2

#: cluster model per (technology, barrel?): extra length (mm) of the charge trail along u and
#: v beyond the track's projected path (Lorentz drift in the barrel, where B lies in the sensor
#: plane, and charge sharing), and the deposited charge at normal incidence (pixel value units
#: of the real files; None: binary strip readout). Calibrated on the real event's cluster
#: sizes (see benchmarks/trackml_realism.py).
CLUSTER = {
    (PIXEL, True): (0.05, 0.0, 0.152),
    (PIXEL, False): (0.008, 0.008, 0.30),
    (SHORT_STRIP, True): (0.0, 0.0, None),
    (SHORT_STRIP, False): (0.0, 0.0, None),
    (LONG_STRIP, True): (0.0, 0.0, None),
    (LONG_STRIP, False): (0.1, 0.0, None),
}
_CHARGE_SPREAD = 0.1  # log-normal sigma of the deposited charge

_EPS_S = 1e-4  # mm: a surface closer than this along the path is the one just crossed


@dataclass(frozen=True)
class SimulationConfig:
    """Options of :func:`simulate_event` (all keyword arguments; units GeV, mm, T, rad)."""

    # event content
    particles_per_vertex: float = 50.0
    vertex_sigma_z: float = 55.0
    vertex_sigma_xy: float = 0.015
    eta_max: float = 4.0
    eta_slope: float = 0.08  # dN/deta falls as 1 - eta_slope * (abs(eta) - 1) above abs(eta) 1
    pt_min: float = 0.1
    pt_min_propagated: float = 0.15  # lower-pT particles are listed but leave no hits
    pt_temperature: float = 0.143  # Tsallis T, fitted to the real primaries
    pt_power: float = 5.94  # Tsallis n
    species: tuple[tuple[int, float], ...] = (
        (211, 0.425),
        (-211, 0.425),
        (321, 0.0425),
        (-321, 0.0425),
        (2212, 0.0275),
        (-2212, 0.0275),
        (11, 0.0035),
        (-11, 0.0035),
        (13, 0.0015),
        (-13, 0.0015),
    )
    displaced_fraction: float = 0.09
    displaced_mean_r: float = 60.0
    # propagation and material
    field: str = "uniform"  # "uniform" or "falling"
    field_tesla: float = 2.0
    max_turn: float = float(np.pi)
    multiple_scattering: bool = True
    energy_loss: bool = True
    hadronic_interactions: bool = True
    x0_over_lambda: float = 0.6  # effective X0 / lambda_I, calibrated (see module docstring)
    secondary_multiplicity: float = 4.0  # mean number of products per nuclear interaction
    secondary_p_scale: float = 0.2  # GeV, exponential momentum spectrum of the products
    max_generation: int = 2
    # response
    hit_inefficiency: float = 0.01
    smear: bool = True
    max_cluster_cells: int = 28  # longer clusters are not recorded (as in the real event)
    noise_fraction: float = 0.15

    def __post_init__(self) -> None:
        if self.field not in ("uniform", "falling"):
            raise ValueError(f"field: expected 'uniform' or 'falling', got {self.field!r}")
        if not 0 <= self.noise_fraction < 1:
            raise ValueError(f"noise_fraction: expected [0, 1), got {self.noise_fraction}")
        if not 0 <= self.hit_inefficiency < 1:
            raise ValueError(f"hit_inefficiency: expected [0, 1), got {self.hit_inefficiency}")
        if self.pt_min <= 0 or self.eta_max <= 0 or self.particles_per_vertex <= 0:
            raise ValueError("pt_min, eta_max and particles_per_vertex must be > 0")
        pdgs = [abs(p) for p, _ in self.species]
        if any(p not in SPECIES for p in pdgs):
            raise ValueError(f"species: PDG codes must be +-{sorted(SPECIES)}, got {pdgs}")

    @classmethod
    def from_options(cls, **options: Any) -> SimulationConfig:
        """Build from keyword options, naming unknown ones."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(f"unknown simulation option(s) {unknown}; valid: {sorted(known)}")
        if "species" in options:
            options["species"] = tuple((int(p), float(f)) for p, f in options["species"])
        return cls(**options)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-compatible dict."""
        return json.loads(json.dumps(dataclasses.asdict(self)))


# ---------------------------------------------------------------------------------------------
# field and helix helpers


def field_strength(z: np.ndarray, cfg: SimulationConfig) -> np.ndarray:
    """Bz (T) at z: constant, or falling with abs(z) like the TrackML solenoid.

    The falling profile is 2 T up to abs(z) 0.75 m, 1.65 T at 1.25 m, 1.1 T at 1.75 m
    (the TrackML detector description), then linearly to 0.6 T at 3 m (an assumption), scaled by ``field_tesla / 2``.
    """
    z = np.asarray(z, dtype=np.float64)
    if cfg.field == "uniform":
        return np.full(z.shape, cfg.field_tesla)
    knots = [0.0, 750.0, 1250.0, 1750.0, 3000.0]
    values = np.array([2.0, 2.0, 1.65, 1.1, 0.6]) * cfg.field_tesla / 2.0
    return np.interp(np.abs(z), knots, values)


def helix_xy(
    x0: np.ndarray, y0: np.ndarray, phi0: np.ndarray, kappa: np.ndarray, s: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Transverse position and momentum direction after transverse path length ``s``.

    The momentum direction turns as ``phi = phi0 + kappa * s`` (kappa = signed curvature,
    1/mm); the chord form ``s * sinc`` is exact and stable for kappa -> 0.
    """
    half = 0.5 * kappa * s
    chord = s * np.sinc(half / np.pi)  # = 2 sin(kappa s / 2) / kappa
    mid = phi0 + half
    return x0 + chord * np.cos(mid), y0 + chord * np.sin(mid), phi0 + 2.0 * half


def curvature(q: np.ndarray, pt: np.ndarray, bz: np.ndarray) -> np.ndarray:
    """Signed curvature (1/mm) of the transverse circle; positive charges in +Bz turn
    clockwise (phi decreases)."""
    return -q * bz * C_LIGHT / pt


# ---------------------------------------------------------------------------------------------
# detector tables


@dataclass
class _Detector:
    """The geometry flattened for the simulator: one global row per module, surfaces."""

    layers: list[BarrelLayer | DiskLayer]
    offsets: np.ndarray  # first global module row of each layer
    disk_lut: list[list[np.ndarray] | None]  # per disk layer: ring -> k -> global row
    # per module (global row)
    volume: np.ndarray
    layer_id: np.ndarray
    module_id: np.ndarray
    centre: np.ndarray
    u: np.ndarray
    v: np.ndarray
    w: np.ndarray
    minhu: np.ndarray
    maxhu: np.ndarray
    hv: np.ndarray
    thickness: np.ndarray
    pitch_u: np.ndarray
    pitch_v: np.ndarray
    spread_u: np.ndarray
    spread_v: np.ndarray
    charge: np.ndarray  # NaN for binary (strip) readout
    # surfaces: cylinders then disks
    cyl_r: np.ndarray
    cyl_hz: np.ndarray
    cyl_x0: np.ndarray
    cyl_layer: np.ndarray
    disk_z: np.ndarray
    disk_rmin: np.ndarray
    disk_rmax: np.ndarray
    disk_x0: np.ndarray
    disk_layer: np.ndarray


@lru_cache(maxsize=4)
def _detector(geometry: Geometry) -> _Detector:
    layers = list(geometry.layers)
    per_layer, offsets, luts, start = [], [], [], 0
    for layer in layers:
        f = module_frames(layer)
        n = len(f["module_id"])
        if isinstance(layer, BarrelLayer):
            minhu = maxhu = np.full(n, layer.half_u)
            hv = np.full(n, layer.half_v)
            luts.append(None)
        else:
            minhu, maxhu, hv = f["minhu"], f["maxhu"], f["hv"]
            lut = []
            for ring_index, ring in enumerate(layer.rings):
                rows = np.empty(ring.n_phi, dtype=np.int64)
                sel = f["ring"] == ring_index
                rows[f["k"][sel]] = start + np.flatnonzero(sel)
                lut.append(rows)
            luts.append(lut)
        spread_u, spread_v, charge = CLUSTER[(layer.technology, isinstance(layer, BarrelLayer))]
        per_layer.append(
            {
                "volume": np.full(n, layer.volume_id, dtype=np.int64),
                "layer_id": np.full(n, layer.layer_id, dtype=np.int64),
                "module_id": f["module_id"].astype(np.int64),
                "centre": np.stack([f["cx"], f["cy"], f["cz"]], axis=1),
                "u": f["u"],
                "v": f["v"],
                "w": f["w"],
                "minhu": minhu,
                "maxhu": maxhu,
                "hv": hv,
                "thickness": np.full(n, layer.thickness),
                "pitch_u": np.full(n, layer.pitch_u),
                "pitch_v": np.full(n, layer.pitch_v),
                "spread_u": np.full(n, spread_u),
                "spread_v": np.full(n, spread_v),
                "charge": np.full(n, np.nan if charge is None else charge),
            }
        )
        offsets.append(start)
        start += n
    arrays = {k: np.concatenate([d[k] for d in per_layer]) for k in per_layer[0]}
    margin = 5.0  # mm: let modules at a layer's edge decide (tilted planes, disk offsets)
    cyl = [
        (la.radius, la.half_length + margin, la.material, i)
        for i, la in enumerate(layers)
        if isinstance(la, BarrelLayer)
    ]
    cyl += [(p.radius, p.half_length, p.material, -1) for p in geometry.passive]
    dsk = [
        (la.z, la.r_min - margin, la.r_max + margin, la.material, i)
        for i, la in enumerate(layers)
        if isinstance(la, DiskLayer)
    ]
    cyl_r, cyl_hz, cyl_x0, cyl_layer = (np.array(c) for c in zip(*cyl, strict=True))
    disk_z, rmin, rmax, disk_x0, disk_layer = (np.array(c) for c in zip(*dsk, strict=True))
    return _Detector(
        layers=layers,
        offsets=np.array(offsets),
        disk_lut=luts,
        **arrays,
        cyl_r=cyl_r,
        cyl_hz=cyl_hz,
        cyl_x0=cyl_x0,
        cyl_layer=cyl_layer.astype(np.int64),
        disk_z=disk_z,
        disk_rmin=rmin,
        disk_rmax=rmax,
        disk_x0=disk_x0,
        disk_layer=disk_layer.astype(np.int64),
    )


# ---------------------------------------------------------------------------------------------
# particles


def _species_properties(pdg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mass and charge arrays of signed PDG codes."""
    a = np.abs(pdg)
    mass = np.zeros(len(pdg))
    charge = np.zeros(len(pdg), dtype=np.int64)
    for code, (m, q) in SPECIES.items():
        sel = a == code
        mass[sel] = m
        charge[sel] = q * np.sign(pdg[sel])
    return mass, charge


@lru_cache(maxsize=8)
def _pt_inverse_cdf(pt_min: float, temperature: float, power: float) -> tuple:
    """Tabulated inverse CDF of the Tsallis spectrum pT (1 + pT/(n T))^-n above pt_min."""
    grid = np.geomspace(pt_min, 500.0, 20001)
    pdf = grid * (1.0 + grid / (power * temperature)) ** (-power)
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (pdf[1:] + pdf[:-1]) * np.diff(grid))])
    return cdf / cdf[-1], grid


def _sample_eta(n: int, cfg: SimulationConfig, rng: np.random.Generator) -> np.ndarray:
    """eta with dN/deta flat up to abs(eta) 1, then falling linearly by ``eta_slope`` per
    unit (fitted to the real primaries), cut at ``eta_max``."""
    grid = np.linspace(0.0, cfg.eta_max, 2001)
    pdf = np.clip(1.0 - cfg.eta_slope * np.maximum(grid - 1.0, 0.0), 0.0, None)
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (pdf[1:] + pdf[:-1]) * np.diff(grid))])
    abs_eta = np.interp(rng.random(n), cdf / cdf[-1], grid)
    return np.where(rng.random(n) < 0.5, -abs_eta, abs_eta)


def _primaries(n: int, cfg: SimulationConfig, rng: np.random.Generator) -> dict[str, np.ndarray]:
    codes = np.array([p for p, _ in cfg.species], dtype=np.int64)
    fractions = np.array([f for _, f in cfg.species], dtype=np.float64)
    pdg = rng.choice(codes, size=n, p=fractions / fractions.sum())
    mass, charge = _species_properties(pdg)
    cdf, grid = _pt_inverse_cdf(cfg.pt_min, cfg.pt_temperature, cfg.pt_power)
    pt = np.interp(rng.random(n), cdf, grid)
    eta = _sample_eta(n, cfg, rng)
    phi = rng.uniform(-np.pi, np.pi, n)
    mom = np.stack([pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)], axis=1)

    n_vertices = max(1, round(n / cfg.particles_per_vertex))
    if n_vertices > 4095:
        raise ValueError(f"{n_vertices} vertices do not fit the 12-bit vertex_id field")
    vertices = np.stack(
        [
            rng.normal(0.0, cfg.vertex_sigma_xy, n_vertices),
            rng.normal(0.0, cfg.vertex_sigma_xy, n_vertices),
            rng.normal(0.0, cfg.vertex_sigma_z, n_vertices),
        ],
        axis=1,
    )
    vertex = rng.integers(0, n_vertices, n)
    order = np.argsort(vertex, kind="stable")
    primary_id = np.empty(n, dtype=np.int64)
    counts = np.bincount(vertex, minlength=n_vertices)
    primary_id[order] = np.arange(n) - np.repeat(np.cumsum(counts) - counts, counts) + 1
    origin = vertices[vertex].copy()
    # displaced decays of neutral hadrons: straight flight along the daughter's direction
    displaced = rng.random(n) < cfg.displaced_fraction
    r_t = rng.exponential(cfg.displaced_mean_r, n)
    origin[displaced] += (mom[displaced] / pt[displaced, None]) * r_t[displaced, None]
    return {
        "pdg": pdg,
        "q": charge,
        "mass": mass,
        "origin": origin,
        "mom": mom,
        "vertex_id": vertex + 1,
        "primary_id": primary_id,
        "generation": np.zeros(n, dtype=np.int64),
        "process": np.full(n, PROCESS_PRIMARY, dtype=np.int64),
        "parent": np.full(n, -1, dtype=np.int64),
    }


def _products(
    inter: dict[str, np.ndarray],
    particles: dict[str, np.ndarray],
    cfg: SimulationConfig,
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """Secondaries of nuclear interactions: protons and pions, isotropic, pT > pt_min."""
    n_int = len(inter["row"])
    k = 1 + rng.poisson(max(cfg.secondary_multiplicity - 1.0, 0.0), n_int)
    parent = np.repeat(inter["row"], k)
    where = np.repeat(inter["pos"], k, axis=0)
    p_parent = np.repeat(np.linalg.norm(inter["mom"], axis=1), k)
    m = len(parent)
    pdg = rng.choice(np.array([2212, 211, -211]), size=m, p=[0.45, 0.275, 0.275])
    p = np.minimum(rng.exponential(cfg.secondary_p_scale, m), 0.9 * p_parent)
    cos_t = rng.uniform(-1.0, 1.0, m)
    phi = rng.uniform(-np.pi, np.pi, m)
    sin_t = np.sqrt(1.0 - cos_t**2)
    mom = p[:, None] * np.stack([sin_t * np.cos(phi), sin_t * np.sin(phi), cos_t], axis=1)
    keep = np.hypot(mom[:, 0], mom[:, 1]) > cfg.pt_min
    parent, pdg, mom, where = parent[keep], pdg[keep], mom[keep], where[keep]
    mass, charge = _species_properties(pdg)
    return {
        "pdg": pdg,
        "q": charge,
        "mass": mass,
        "origin": where,
        "mom": mom,
        "vertex_id": particles["vertex_id"][parent],
        "primary_id": particles["primary_id"][parent],
        "generation": particles["generation"][parent] + 1,
        "process": np.full(len(parent), PROCESS_HADRONIC, dtype=np.int64),
        "parent": parent,
    }


# ---------------------------------------------------------------------------------------------
# propagation


def _next_crossing(
    det: _Detector,
    pos: np.ndarray,
    mom: np.ndarray,
    q: np.ndarray,
    turn: np.ndarray,
    cfg: SimulationConfig,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Path length (transverse, mm) to the next surface, its index (cylinders first, then
    disks) and the field used; inf where the particle leaves the detector."""
    x, y, z = pos[:, 0], pos[:, 1], pos[:, 2]
    pt = np.hypot(mom[:, 0], mom[:, 1])
    phi0 = np.arctan2(mom[:, 1], mom[:, 0])
    cot = mom[:, 2] / pt
    bz = field_strength(z, cfg)
    kappa = curvature(q, pt, bz)
    akappa = np.abs(kappa)
    turn_left = (cfg.max_turn - turn) / akappa  # path length left before max_turn
    sin0, cos0 = np.sin(phi0), np.cos(phi0)
    cx, cy = x - sin0 / kappa, y + cos0 / kappa
    dist = np.hypot(cx, cy)
    beta = np.arctan2(cy, cx)
    pn = -x * sin0 + y * cos0

    # cylinders: |P(phi)|^2 = R^2 <=> dist sin(phi - beta) = kappa (R^2 - r0^2) / 2 - pn - 1/kappa
    rhs = kappa[:, None] * (det.cyl_r[None, :] ** 2 - (x * x + y * y)[:, None]) / 2
    rhs -= (pn + 1.0 / kappa)[:, None]
    ratio = rhs / dist[:, None]
    ok = np.abs(ratio) <= 1.0
    asn = np.arcsin(np.clip(ratio, -1.0, 1.0))
    sgn = np.sign(kappa)[:, None]
    s_cyl = np.full(ratio.shape, np.inf)
    for phi_sol in (beta[:, None] + asn, beta[:, None] + np.pi - asn):
        s = np.mod(sgn * (phi_sol - phi0[:, None]), 2 * np.pi) / akappa[:, None]
        s_cyl = np.where(ok & (s > _EPS_S) & (s < s_cyl), s, s_cyl)
    z_at = z[:, None] + s_cyl * cot[:, None]
    s_cyl[~(np.abs(z_at) <= det.cyl_hz[None, :])] = np.inf

    # disks: z(s) = z0 + s cot
    with np.errstate(divide="ignore", invalid="ignore"):
        s_dsk = (det.disk_z[None, :] - z[:, None]) / cot[:, None]
    s_dsk[~(s_dsk > _EPS_S)] = np.inf
    fin = np.isfinite(s_dsk)
    rows, cols = np.nonzero(fin)
    xd, yd, _ = helix_xy(x[rows], y[rows], phi0[rows], kappa[rows], s_dsk[rows, cols])
    rd = np.hypot(xd, yd)
    inside = (rd >= det.disk_rmin[cols]) & (rd <= det.disk_rmax[cols])
    s_dsk[rows[~inside], cols[~inside]] = np.inf

    s_all = np.concatenate([s_cyl, s_dsk], axis=1)
    s_all[s_all > turn_left[:, None]] = np.inf
    index = np.argmin(s_all, axis=1)
    s_min = s_all[np.arange(len(index)), index]
    return s_min, index, bz


def _material_effects(
    mom: np.ndarray,
    normal: np.ndarray,
    x0: np.ndarray,
    mass: np.ndarray,
    q: np.ndarray,
    cfg: SimulationConfig,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Energy loss and multiple scattering at a surface crossing.

    Returns the new momenta, a mask of particles that stopped (no kinetic energy left) and the
    traversed thickness in X0 (x/X0 of the surface over the cosine of the incidence angle).
    """
    p = np.linalg.norm(mom, axis=1)
    direction = mom / p[:, None]
    cos_inc = np.abs(np.sum(direction * normal, axis=1))
    x = x0 / np.maximum(cos_inc, 0.05)
    energy = np.hypot(p, mass)
    stopped = np.zeros(len(p), dtype=bool)
    if cfg.energy_loss:
        beta2 = (p / energy) ** 2
        loss = DEDX_MIN_SILICON * x * X0_SILICON * np.maximum(BETA2_AT_MINIMUM / beta2, 1.0)
        energy = energy - loss
        stopped = energy <= mass * (1.0 + 1e-9)
        energy = np.where(stopped, mass * (1.0 + 1e-6), energy)
    p_new = np.sqrt(np.maximum(energy**2 - mass**2, 0.0))
    if cfg.multiple_scattering:
        beta = p_new / energy
        xq = x * q**2
        theta0 = 0.0136 / (beta * p_new) * np.abs(q) * np.sqrt(xq)
        theta0 *= np.maximum(1.0 + 0.038 * np.log(xq / beta**2), 0.0)
        theta = theta0 * np.sqrt(-2.0 * np.log1p(-rng.random(len(p))))  # 2D Gaussian radius
        psi = rng.uniform(0, 2 * np.pi, len(p))
        # orthonormal frame around the direction (direction has pT > 0)
        e1 = np.stack([-direction[:, 1], direction[:, 0], np.zeros(len(p))], axis=1)
        e1 /= np.linalg.norm(e1, axis=1, keepdims=True)
        e2 = np.cross(direction, e1)
        kick = np.cos(psi)[:, None] * e1 + np.sin(psi)[:, None] * e2
        direction = np.cos(theta)[:, None] * direction + np.sin(theta)[:, None] * kick
    return p_new[:, None] * direction, stopped, x


def _propagate(
    det: _Detector,
    particles: dict[str, np.ndarray],
    rows: np.ndarray,
    cfg: SimulationConfig,
    rng: np.random.Generator,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Propagate particles ``rows`` through the detector.

    Returns the crossings of sensitive layers (row, layer, pos, mom, bz: the state on the
    layer's nominal surface before its material) and the nuclear interactions (row, pos, mom).
    """
    pt0 = np.hypot(particles["mom"][rows, 0], particles["mom"][rows, 1])
    rows = rows[pt0 >= cfg.pt_min_propagated]
    pos = particles["origin"][rows].copy()
    mom = particles["mom"][rows].copy()
    q = particles["q"][rows].astype(np.float64)
    mass = particles["mass"][rows]
    hadron = np.isin(np.abs(particles["pdg"][rows]), HADRONS)
    turn = np.zeros(len(rows))
    alive = np.arange(len(rows))
    n_cyl = len(det.cyl_r)
    out: dict[str, list] = {"row": [], "layer": [], "pos": [], "mom": [], "bz": []}
    inter: dict[str, list] = {"row": [], "pos": [], "mom": []}
    for _ in range(1000):  # each step crosses one surface; ~40 surfaces per track at most
        if len(alive) == 0:
            break
        s, index, bz = _next_crossing(det, pos[alive], mom[alive], q[alive], turn[alive], cfg)
        go = np.isfinite(s)
        alive, s, index, bz = alive[go], s[go], index[go], bz[go]
        if len(alive) == 0:
            break
        p0, m0 = pos[alive], mom[alive]
        pt = np.hypot(m0[:, 0], m0[:, 1])
        phi0 = np.arctan2(m0[:, 1], m0[:, 0])
        kappa = curvature(q[alive], pt, bz)
        x1, y1, phi1 = helix_xy(p0[:, 0], p0[:, 1], phi0, kappa, s)
        z1 = p0[:, 2] + s * m0[:, 2] / pt
        new_pos = np.stack([x1, y1, z1], axis=1)
        new_mom = np.stack([pt * np.cos(phi1), pt * np.sin(phi1), m0[:, 2]], axis=1)
        turn[alive] += np.abs(kappa) * s

        is_cyl = index < n_cyl
        layer = np.where(
            is_cyl,
            det.cyl_layer[np.minimum(index, n_cyl - 1)],
            det.disk_layer[np.maximum(index - n_cyl, 0)],
        )
        x0 = np.where(
            is_cyl,
            det.cyl_x0[np.minimum(index, n_cyl - 1)],
            det.disk_x0[np.maximum(index - n_cyl, 0)],
        )
        sensitive = layer >= 0
        out["row"].append(rows[alive[sensitive]])
        out["layer"].append(layer[sensitive])
        out["pos"].append(new_pos[sensitive])
        out["mom"].append(new_mom[sensitive])
        out["bz"].append(bz[sensitive])

        r1 = np.hypot(x1, y1)
        normal = np.where(
            is_cyl[:, None],
            np.stack([x1 / r1, y1 / r1, np.zeros_like(r1)], axis=1),
            np.array([0.0, 0.0, 1.0]),
        )
        new_mom, stopped, x = _material_effects(
            new_mom, normal, x0, mass[alive], q[alive], cfg, rng
        )
        interacts = np.zeros(len(alive), dtype=bool)
        if cfg.hadronic_interactions:
            prob = -np.expm1(-x * cfg.x0_over_lambda)
            interacts = hadron[alive] & ~stopped & (rng.random(len(alive)) < prob)
            inter["row"].append(rows[alive[interacts]])
            inter["pos"].append(new_pos[interacts])
            inter["mom"].append(new_mom[interacts])
        pos[alive], mom[alive] = new_pos, new_mom
        alive = alive[~(stopped | interacts)]

    def cat(d: dict[str, list], shapes: dict[str, tuple]) -> dict[str, np.ndarray]:
        return {k: (np.concatenate(v) if v else np.zeros(shapes[k])) for k, v in d.items()}

    shapes = {"row": (0,), "layer": (0,), "pos": (0, 3), "mom": (0, 3), "bz": (0,)}
    crossings = cat(out, shapes)
    crossings["row"] = crossings["row"].astype(np.int64)
    crossings["layer"] = crossings["layer"].astype(np.int64)
    interactions = cat(inter, shapes)
    interactions["row"] = interactions["row"].astype(np.int64)
    return crossings, interactions


# ---------------------------------------------------------------------------------------------
# module intersections


def _barrel_candidates(det: _Detector, li: int, pos: np.ndarray) -> np.ndarray:
    """Global module rows (n, 9) around each crossing of barrel layer ``li``; -1 if none."""
    layer = det.layers[li]
    phi = np.arctan2(pos[:, 1], pos[:, 0])
    dphi = 2 * np.pi / layer.n_phi
    iphi0 = np.floor((phi + np.pi) / dphi).astype(np.int64)
    z_first = -(layer.n_z - 1) / 2 * layer.z_pitch
    iz0 = np.round((pos[:, 2] - z_first) / layer.z_pitch).astype(np.int64)
    cands = []
    for diz in (-1, 0, 1):
        iz = iz0 + diz
        valid = (iz >= 0) & (iz < layer.n_z)
        for dp in (-1, 0, 1):
            iphi = np.mod(iphi0 + dp, layer.n_phi)
            cands.append(np.where(valid, det.offsets[li] + iz * layer.n_phi + iphi, -1))
    return np.stack(cands, axis=1)


def _disk_candidates(det: _Detector, li: int, pos: np.ndarray) -> np.ndarray:
    """Global module rows (n, 3 x rings) around each crossing of disk layer ``li``."""
    layer = det.layers[li]
    phi = np.arctan2(pos[:, 1], pos[:, 0])
    r = np.hypot(pos[:, 0], pos[:, 1])
    cands = []
    for ring, lut in zip(layer.rings, det.disk_lut[li], strict=True):
        near = np.abs(r - ring.radius) <= ring.half_v + 10.0
        k0 = np.floor((phi + np.pi) / (2 * np.pi / ring.n_phi)).astype(np.int64)
        for dk in (-1, 0, 1):
            cands.append(np.where(near, lut[np.mod(k0 + dk, ring.n_phi)], -1))
    return np.stack(cands, axis=1)


def _module_hits(det: _Detector, cr: dict[str, np.ndarray], q: np.ndarray) -> dict[str, Any]:
    """Intersect the helix at each layer crossing with the nearby modules; keep the hits inside
    a module. Returns per hit: row, module (global row), true pos, mom, local u, v."""
    res: dict[str, list] = {"row": [], "module": [], "pos": [], "mom": [], "u": [], "v": []}
    for li, layer in enumerate(det.layers):
        sel = np.flatnonzero(cr["layer"] == li)
        if len(sel) == 0:
            continue
        pos, mom, bz = cr["pos"][sel], cr["mom"][sel], cr["bz"][sel]
        is_barrel = isinstance(layer, BarrelLayer)
        cand = (_barrel_candidates if is_barrel else _disk_candidates)(det, li, pos)
        i_cr, j = np.nonzero(cand >= 0)
        mod = cand[i_cr, j]
        pt = np.hypot(mom[i_cr, 0], mom[i_cr, 1])
        phi0 = np.arctan2(mom[i_cr, 1], mom[i_cr, 0])
        cot = mom[i_cr, 2] / pt
        kappa = curvature(q[sel][i_cr], pt, bz[i_cr])
        x0, y0, z0 = pos[i_cr, 0], pos[i_cr, 1], pos[i_cr, 2]
        centre, w = det.centre[mod], det.w[mod]
        if is_barrel:
            # Newton on f(s) = w . (P(s) - C) for the tilted plane (w has no z component)
            s = np.zeros(len(mod))
            for _ in range(6):
                x, y, phi = helix_xy(x0, y0, phi0, kappa, s)
                f = w[:, 0] * (x - centre[:, 0]) + w[:, 1] * (y - centre[:, 1])
                fp = w[:, 0] * np.cos(phi) + w[:, 1] * np.sin(phi)
                s = s - f / np.where(np.abs(fp) > 1e-3, fp, np.copysign(1e-3, fp))
            x, y, phi = helix_xy(x0, y0, phi0, kappa, s)
            f = w[:, 0] * (x - centre[:, 0]) + w[:, 1] * (y - centre[:, 1])
            good = (np.abs(f) < 1e-6) & (np.abs(s) < 50.0)
        else:
            with np.errstate(divide="ignore", invalid="ignore"):
                s = (centre[:, 2] - z0) / cot
            good = np.isfinite(s) & (np.abs(s) < 50.0)
            s = np.where(good, s, 0.0)
            x, y, phi = helix_xy(x0, y0, phi0, kappa, s)
        z = z0 + s * cot
        p = np.stack([x, y, z], axis=1)
        d = p - centre
        u = np.sum(d * det.u[mod], axis=1)
        v = np.sum(d * det.v[mod], axis=1)
        hv = det.hv[mod]
        half_u = det.minhu[mod] + (det.maxhu[mod] - det.minhu[mod]) * (v + hv) / (2 * hv)
        inside = good & (np.abs(v) <= hv) & (np.abs(u) <= half_u)
        res["row"].append(cr["row"][sel][i_cr[inside]])
        res["module"].append(mod[inside])
        res["pos"].append(p[inside])
        res["mom"].append(
            np.stack([pt * np.cos(phi), pt * np.sin(phi), mom[i_cr, 2]], axis=1)[inside]
        )
        res["u"].append(u[inside])
        res["v"].append(v[inside])
    if not res["row"]:
        return {
            "row": np.zeros(0, np.int64),
            "module": np.zeros(0, np.int64),
            "pos": np.zeros((0, 3)),
            "mom": np.zeros((0, 3)),
            "u": np.zeros(0),
            "v": np.zeros(0),
        }
    return {k: np.concatenate(v) for k, v in res.items()}


# ---------------------------------------------------------------------------------------------
# digitisation


def _clusters(
    det: _Detector,
    module: np.ndarray,
    u: np.ndarray,
    v: np.ndarray,
    direction: np.ndarray,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Cells of each hit: the channels under the track's path through the sensor, widened by
    the charge-sharing width. Returns (hit index, ch0, ch1, value) per cell."""
    n = len(module)
    pu, pv, t = det.pitch_u[module], det.pitch_v[module], det.thickness[module]
    hu, hv = det.maxhu[module], det.hv[module]
    nu = np.maximum(np.round(2 * hu / pu).astype(np.int64), 1)
    nv = np.maximum(np.round(2 * hv / pv).astype(np.int64), 1)
    du = np.sum(direction * det.u[module], axis=1)
    dv = np.sum(direction * det.v[module], axis=1)
    dw = np.maximum(np.abs(np.sum(direction * det.w[module], axis=1)), 0.02)
    # path through the sensor, projected on the module plane (at most the module size)
    lu = np.minimum(t * np.abs(du) / dw + det.spread_u[module], 2 * hu) * np.sign(du)
    lv = np.minimum(t * np.abs(dv) / dw + det.spread_v[module], 2 * hv) * np.sign(dv)
    # long axis a (more cells), short axis b
    cells_u = np.abs(lu) / pu
    cells_v = np.abs(lv) / pv
    a_is_u = cells_u >= cells_v
    pa, pb = np.where(a_is_u, pu, pv), np.where(a_is_u, pv, pu)
    ha, hb = np.where(a_is_u, hu, hv), np.where(a_is_u, hv, hu)
    na, nb = np.where(a_is_u, nu, nv), np.where(a_is_u, nv, nu)
    ca, cb = np.where(a_is_u, u, v), np.where(a_is_u, v, u)
    la, lb = np.where(a_is_u, lu, lv), np.where(a_is_u, lv, lu)
    a_lo = ca - np.abs(la) / 2
    a_hi = ca + np.abs(la) / 2
    i_lo = np.clip(np.floor((a_lo + ha) / pa).astype(np.int64), 0, na - 1)
    i_hi = np.clip(np.floor((a_hi + ha) / pa).astype(np.int64), 0, na - 1)
    count_a = i_hi - i_lo + 1
    hit = np.repeat(np.arange(n), count_a)
    i = i_lo[hit] + (np.arange(len(hit)) - np.repeat(np.cumsum(count_a) - count_a, count_a))
    # short-axis range covered by the segment within the long-axis cell
    cell_lo = -ha[hit] + i * pa[hit]
    seg_lo = np.maximum(cell_lo, a_lo[hit])
    seg_hi = np.maximum(np.minimum(cell_lo + pa[hit], a_hi[hit]), seg_lo)
    slope = np.where(la[hit] != 0, lb[hit] / np.where(la[hit] == 0, 1, la[hit]), 0.0)
    b1 = cb[hit] + (seg_lo - ca[hit]) * slope
    b2 = cb[hit] + (seg_hi - ca[hit]) * slope
    b_lo, b_hi = np.minimum(b1, b2), np.maximum(b1, b2)
    j_lo = np.clip(np.floor((b_lo + hb[hit]) / pb[hit]).astype(np.int64), 0, nb[hit] - 1)
    j_hi = np.clip(np.floor((b_hi + hb[hit]) / pb[hit]).astype(np.int64), 0, nb[hit] - 1)
    count_b = j_hi - j_lo + 1
    cell_hit = np.repeat(hit, count_b)
    ia = np.repeat(i, count_b)
    jb = np.repeat(j_lo, count_b) + (
        np.arange(count_b.sum()) - np.repeat(np.cumsum(count_b) - count_b, count_b)
    )
    ch0 = np.where(a_is_u[cell_hit], ia, jb)
    ch1 = np.where(a_is_u[cell_hit], jb, ia)
    # values: deposited charge shared among the cells (pixels), 1 for strips
    scale = det.charge[module]
    total = scale / dw * rng.lognormal(0.0, _CHARGE_SPREAD, n)
    share = rng.uniform(0.5, 1.5, len(cell_hit))
    norm = np.bincount(cell_hit, weights=share, minlength=n)
    value = np.where(np.isnan(scale[cell_hit]), 1.0, total[cell_hit] * share / norm[cell_hit])
    return cell_hit, ch0, ch1, value


def _noise(
    det: _Detector, n_noise: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Noise hits uniform over modules and within each module: (module, u, v, direction)."""
    module = rng.integers(0, len(det.module_id), n_noise)
    hv = det.hv[module]
    v = rng.uniform(-1, 1, n_noise) * hv
    half_u = det.minhu[module] + (det.maxhu[module] - det.minhu[module]) * (v + hv) / (2 * hv)
    u = rng.uniform(-1, 1, n_noise) * half_u
    # a random direction within ~65 degrees of the module normal, for the cluster shape
    local = np.stack(
        [rng.normal(0, 0.6, n_noise), rng.normal(0, 0.6, n_noise), np.ones(n_noise)], axis=1
    )
    local /= np.linalg.norm(local, axis=1, keepdims=True)
    direction = (
        local[:, :1] * det.u[module] + local[:, 1:2] * det.v[module] + local[:, 2:] * det.w[module]
    )
    return module, u, v, direction


# ---------------------------------------------------------------------------------------------
# the event


def encode_particle_id(
    vertex_id: np.ndarray,
    primary_id: np.ndarray,
    generation: np.ndarray,
    secondary_id: np.ndarray,
    process: np.ndarray,
) -> np.ndarray:
    """TrackML particle_id bit field: vertex 52-63, primary 36-51, generation 24-35,
    secondary 12-23, process 0-11 (as int64: vertex ids >= 2048 set the sign bit)."""
    fields = [
        (vertex_id, 52, 12),
        (primary_id, 36, 16),
        (generation, 24, 12),
        (secondary_id, 12, 12),
        (process, 0, 12),
    ]
    out = np.zeros(len(np.asarray(vertex_id)), dtype=np.uint64)
    for values, shift, bits in fields:
        values = np.asarray(values, dtype=np.int64)
        if (values < 0).any() or (values >= 1 << bits).any():
            raise ValueError(f"particle_id field at bit {shift} needs 0 <= value < {1 << bits}")
        out |= values.astype(np.uint64) << np.uint64(shift)
    return out.view(np.int64)


def decode_particle_id(particle_id: np.ndarray) -> dict[str, np.ndarray]:
    """Inverse of :func:`encode_particle_id`."""
    pid = np.asarray(particle_id, dtype=np.int64).view(np.uint64)
    fields = {
        "vertex_id": (52, 12),
        "primary_id": (36, 16),
        "generation": (24, 12),
        "secondary_id": (12, 12),
        "process": (0, 12),
    }
    return {
        name: ((pid >> np.uint64(shift)) & np.uint64((1 << bits) - 1)).astype(np.int64)
        for name, (shift, bits) in fields.items()
    }


def _secondary_ids(particles: dict[str, np.ndarray]) -> np.ndarray:
    """Counter 1, 2, ... of secondaries within (vertex, primary, generation); 0 for primaries."""
    sec = np.zeros(len(particles["pdg"]), dtype=np.int64)
    is_sec = particles["generation"] > 0
    if is_sec.any():
        key = pd.DataFrame(
            {k: particles[k][is_sec] for k in ("vertex_id", "primary_id", "generation")}
        )
        sec[is_sec] = key.groupby(list(key.columns), sort=False).cumcount().to_numpy() + 1
    return sec


def simulate_event(
    n_particles: int, seed: int | list[int], geometry: Geometry | None = None, **options: Any
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Simulate one TrackML event.

    Args:
        n_particles: number of primary particles (secondaries come on top: ~25% more).
        seed: random seed; the event is a deterministic function of the arguments.
        geometry: detector (default: the built-in TrackML layout).
        **options: fields of :class:`SimulationConfig`.

    Returns:
        ``(hits, cells, particles, truth)`` with the columns and dtypes of
        :func:`hepexp.data.trackml.io.load_event`.
    """
    cfg = SimulationConfig.from_options(**options)
    if n_particles < 0:
        raise ValueError(f"n_particles must be >= 0, got {n_particles}")
    rng = np.random.default_rng(seed)
    det = _detector(geometry or trackml_geometry())

    # particles and propagation, generation by generation
    particles = _primaries(int(n_particles), cfg, rng)
    todo = np.arange(len(particles["pdg"]))
    all_cross = []
    for generation in range(cfg.max_generation + 1):
        crossings, inter = _propagate(det, particles, todo, cfg, rng)
        all_cross.append(crossings)
        if generation == cfg.max_generation or len(inter["row"]) == 0:
            break
        new = _products(inter, particles, cfg, rng)
        start = len(particles["pdg"])
        particles = {k: np.concatenate([particles[k], new[k]]) for k in particles}
        todo = np.arange(start, len(particles["pdg"]))
    crossings = {k: np.concatenate([c[k] for c in all_cross]) for k in all_cross[0]}
    q = particles["q"].astype(np.float64)
    hits = _module_hits(det, crossings, q[crossings["row"]])

    # clusters of the signal hits; inefficiency and over-long clusters lose hits
    direction = hits["mom"] / np.linalg.norm(hits["mom"], axis=1, keepdims=True)
    cells = _clusters(det, hits["module"], hits["u"], hits["v"], direction, rng)
    size = np.bincount(cells[0], minlength=len(hits["row"]))
    keep = rng.random(len(hits["row"])) >= cfg.hit_inefficiency
    keep &= size <= cfg.max_cluster_cells
    hits = {k: v[keep] for k, v in hits.items()}
    cells = _select_cells(cells, keep)
    module = hits["module"]
    u_meas, v_meas = hits["u"], hits["v"]
    if cfg.smear:
        u_meas, v_meas = _smear(det, module, u_meas, v_meas, rng)

    # noise: a Poisson number of hits making noise_fraction of all hits on average
    n_signal = len(module)
    expected = cfg.noise_fraction / (1 - cfg.noise_fraction) * n_signal
    n_noise = int(rng.poisson(expected)) if expected > 0 else 0
    nz_module, nz_u, nz_v, nz_dir = _noise(det, n_noise, rng)
    nz_cells = _clusters(det, nz_module, nz_u, nz_v, nz_dir, rng)

    all_module = np.concatenate([module, nz_module])
    all_u = np.concatenate([u_meas, nz_u])
    all_v = np.concatenate([v_meas, nz_v])
    meas = (
        det.centre[all_module]
        + all_u[:, None] * det.u[all_module]
        + all_v[:, None] * det.v[all_module]
    )

    # particle table
    secondary_id = _secondary_ids(particles)
    pid = encode_particle_id(
        particles["vertex_id"],
        particles["primary_id"],
        particles["generation"],
        secondary_id,
        particles["process"],
    )
    nhits = np.bincount(hits["row"], minlength=len(pid))

    # hit ordering: by volume, layer, module, then at random; hit_id = 1..N
    n_hits = len(all_module)
    order = np.lexsort(
        (
            rng.permutation(n_hits),
            det.module_id[all_module],
            det.layer_id[all_module],
            det.volume[all_module],
        )
    )
    hit_id = np.empty(n_hits, dtype=np.int64)
    hit_id[order] = np.arange(1, n_hits + 1)

    hit_pid = np.concatenate([pid[hits["row"]], np.zeros(n_noise, dtype=np.int64)])
    true_pos = np.concatenate([hits["pos"], meas[n_signal:]])
    true_mom = np.concatenate([hits["mom"], np.zeros((n_noise, 3))])
    hits_df = (
        pd.DataFrame(
            {
                "hit_id": hit_id,
                "x": meas[:, 0],
                "y": meas[:, 1],
                "z": meas[:, 2],
                "volume_id": det.volume[all_module],
                "layer_id": det.layer_id[all_module],
                "module_id": det.module_id[all_module],
            }
        )
        .iloc[order]
        .reset_index(drop=True)
    )
    truth_df = (
        pd.DataFrame(
            {
                "hit_id": hit_id,
                "particle_id": hit_pid,
                "tx": true_pos[:, 0],
                "ty": true_pos[:, 1],
                "tz": true_pos[:, 2],
                "tpx": true_mom[:, 0],
                "tpy": true_mom[:, 1],
                "tpz": true_mom[:, 2],
            }
        )
        .iloc[order]
        .reset_index(drop=True)
    )
    cell_hit = np.concatenate([cells[0], nz_cells[0] + n_signal])
    cells_df = pd.DataFrame(
        {
            "hit_id": hit_id[cell_hit],
            "ch0": np.concatenate([cells[1], nz_cells[1]]),
            "ch1": np.concatenate([cells[2], nz_cells[2]]),
            "value": np.concatenate([cells[3], nz_cells[3]]),
        }
    ).sort_values(["hit_id", "ch0", "ch1"], ignore_index=True)
    particles_df = pd.DataFrame(
        {
            "particle_id": pid,
            "particle_type": particles["pdg"],
            "vx": particles["origin"][:, 0],
            "vy": particles["origin"][:, 1],
            "vz": particles["origin"][:, 2],
            "px": particles["mom"][:, 0],
            "py": particles["mom"][:, 1],
            "pz": particles["mom"][:, 2],
            "q": particles["q"],
            "nhits": nhits,
        }
    ).sort_values("particle_id", ignore_index=True)
    truth_df["weight"] = hit_weights(truth_df, particles_df)
    return hits_df, cells_df, particles_df, truth_df


def _select_cells(cells: tuple, keep: np.ndarray) -> tuple:
    """Cells of the kept hits, with hit indices renumbered to the kept hits."""
    cell_hit = cells[0]
    sel = keep[cell_hit]
    new_index = np.cumsum(keep) - 1
    return (new_index[cell_hit[sel]], *(c[sel] for c in cells[1:]))


def _smear(
    det: _Detector, module: np.ndarray, u: np.ndarray, v: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian resolution pitch/sqrt(12) in u and v, kept inside the module."""
    hv = det.hv[module]
    v_meas = np.clip(v + rng.normal(0.0, 1.0, len(v)) * det.pitch_v[module] / 12**0.5, -hv, hv)
    half_u = det.minhu[module] + (det.maxhu[module] - det.minhu[module]) * (v_meas + hv) / (2 * hv)
    u_meas = u + rng.normal(0.0, 1.0, len(u)) * det.pitch_u[module] / 12**0.5
    return np.clip(u_meas, -half_u, half_u), v_meas


# ---------------------------------------------------------------------------------------------
# datasets


def dataset_settings(
    n_events: int, n_particles: int, seed: int, compress: bool = False, **options: Any
) -> dict[str, Any]:
    """The settings recorded in ``simulation.json`` (options resolved to all their values)."""
    cfg = SimulationConfig.from_options(**options)
    return {
        "generator": "hepexp.data.trackml.simulate",
        "version": SIMULATOR_VERSION,
        "format": "trackml-csv",
        "n_events": int(n_events),
        "n_particles": int(n_particles),
        "seed": int(seed),
        "compress": bool(compress),
        "options": cfg.to_dict(),
    }


def event_seed(seed: int, event_index: int) -> list[int]:
    """Seed of event ``event_index`` of a dataset (independent of the number of events)."""
    return [int(seed), int(event_index)]


def _simulate_and_write(
    i: int, out_dir: Path, n_particles: int, seed: int, compress: bool, options: dict
) -> None:
    frames = simulate_event(n_particles, event_seed(seed, i), **options)
    write_event(event_prefix(out_dir, i + 1), *frames, compress=compress)


def _write_events(
    out_dir: Path,
    n_events: int,
    n_particles: int,
    seed: int,
    compress: bool,
    progress: bool,
    workers: int = 1,
    **options: Any,
) -> None:
    job = partial(
        _simulate_and_write,
        out_dir=out_dir,
        n_particles=n_particles,
        seed=seed,
        compress=compress,
        options=options,
    )
    desc = "simulating TrackML events" if progress else None
    for _ in ordered_map(job, range(n_events), workers, desc=desc, unit="event"):
        pass


def ensure_simulated(
    out_dir: str | os.PathLike,
    n_events: int,
    n_particles: int,
    seed: int,
    compress: bool = False,
    progress: bool = True,
    workers: int = 1,
    **options: Any,
) -> Path:
    """Return ``out_dir`` holding the simulated dataset with these settings, simulating it only
    when it holds none or one made with other settings.

    The events are written into a temporary sibling directory which then replaces ``out_dir``
    (no half-written dataset is left behind if interrupted).
    """
    settings = dataset_settings(n_events, n_particles, seed, compress, **options)

    def generate(tmp: Path) -> None:
        _write_events(tmp, n_events, n_particles, seed, compress, progress, workers, **options)

    def complete(directory: Path) -> bool:
        suffix = ".csv.gz" if compress else ".csv"
        return list_events(directory, PARTS) == list(range(1, n_events + 1)) and all(
            Path(f"{event_prefix(directory, i)}-{part}{suffix}").exists()
            for i in range(1, n_events + 1)
            for part in PARTS
        )

    return ensure_generated(out_dir, settings, generate, is_complete=complete)
