"""TrackML detector geometry: the built-in layout and the reader of ``detectors.csv``.

The built-in layout reproduces the module structure of the 18,728-module TrackML detector
(``detectors.csv`` of the Kaggle challenge); see the TrackML challenge's detector description:

- barrel layers (volumes 8, 13, 17): ``n_phi x n_z`` planar rectangular modules, module centres
  at ``radius + stagger`` (even z index) or ``radius - stagger`` (odd), module normals tilted by
  ``tilt`` from the radial direction ("turbine" layout, so neighbours overlap in phi), module
  ``v`` axis along z. ``module_id = iz * n_phi + iphi + 1``, ``iphi`` counted from phi = -pi.
- endcap disks (volumes 7/9, 12/14, 16/18, negative/positive z): rings of trapezoidal modules
  (``v`` axis radial, short side inwards) at the disk z plus a per-module offset away from the
  interaction point, alternating so that neighbours overlap; module ids follow phi.

Units: mm, rad. Material is given per layer as the thickness in radiation lengths (x/X0) at
normal incidence, sensor plus services; the values are estimates from the multiple-scattering
angles between consecutive hits of the real event (see ``benchmarks/trackml_realism.py``).
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from hepexp.errors import DataError

#: columns of ``detectors.csv`` (the real file has an extra unnamed index column first)
DETECTOR_COLUMNS = [
    "volume_id",
    "layer_id",
    "module_id",
    "cx",
    "cy",
    "cz",
    "rot_xu",
    "rot_xv",
    "rot_xw",
    "rot_yu",
    "rot_yv",
    "rot_yw",
    "rot_zu",
    "rot_zv",
    "rot_zw",
    "module_t",
    "module_minhu",
    "module_maxhu",
    "module_hv",
    "pitch_u",
    "pitch_v",
]
_INT_COLUMNS = ("volume_id", "layer_id", "module_id")

#: columns of :meth:`Geometry.layer_table` and :func:`layer_table_from_detectors`
LAYER_COLUMNS = [
    "volume_id",
    "layer_id",
    "kind",
    "r",
    "z",
    "r_min",
    "r_max",
    "z_min",
    "z_max",
    "n_modules",
    "thickness",
    "pitch_u",
    "pitch_v",
]

PIXEL, SHORT_STRIP, LONG_STRIP = "pixel", "short_strip", "long_strip"


@dataclass(frozen=True)
class BarrelLayer:
    """A cylindrical layer of planar rectangular modules (see module docstring)."""

    volume_id: int
    layer_id: int
    radius: float
    n_phi: int
    n_z: int
    z_pitch: float
    stagger: float
    tilt: float
    half_u: float
    half_v: float
    thickness: float
    pitch_u: float
    pitch_v: float
    material: float
    technology: str

    @property
    def half_length(self) -> float:
        """Largest abs(z) covered by a module."""
        return (self.n_z - 1) / 2 * self.z_pitch + self.half_v

    @property
    def n_modules(self) -> int:
        return self.n_phi * self.n_z


@dataclass(frozen=True)
class Ring:
    """A ring of trapezoidal disk modules; ``z_offsets[k % len]`` is the offset of module ``k``
    from the disk plane, positive away from the interaction point."""

    radius: float
    n_phi: int
    half_u_min: float
    half_u_max: float
    half_v: float
    z_offsets: tuple[float, ...]


@dataclass(frozen=True)
class DiskLayer:
    """An endcap disk (signed ``z``) made of rings of modules."""

    volume_id: int
    layer_id: int
    z: float
    rings: tuple[Ring, ...]
    thickness: float
    pitch_u: float
    pitch_v: float
    material: float
    technology: str

    @property
    def r_min(self) -> float:
        return min(r.radius - r.half_v for r in self.rings)

    @property
    def r_max(self) -> float:
        return max(np.hypot(r.radius + r.half_v, r.half_u_max) for r in self.rings)

    @property
    def n_modules(self) -> int:
        return sum(r.n_phi for r in self.rings)


@dataclass(frozen=True)
class PassiveCylinder:
    """Material without sensors (beam pipe, support tube)."""

    name: str
    radius: float
    half_length: float
    material: float


@dataclass(frozen=True)
class Geometry:
    """A detector: sensitive barrel layers and disks plus passive cylinders."""

    barrels: tuple[BarrelLayer, ...]
    disks: tuple[DiskLayer, ...]
    passive: tuple[PassiveCylinder, ...] = field(default=())

    @property
    def layers(self) -> tuple[BarrelLayer | DiskLayer, ...]:
        """All sensitive layers, sorted by (volume_id, layer_id)."""
        return tuple(sorted(self.barrels + self.disks, key=lambda la: (la.volume_id, la.layer_id)))

    @cached_property
    def _modules(self) -> pd.DataFrame:
        frames = [barrel_modules(b) for b in self.barrels] + [disk_modules(d) for d in self.disks]
        table = pd.concat(frames, ignore_index=True)
        return table.sort_values(["volume_id", "layer_id", "module_id"], ignore_index=True)

    def modules(self) -> pd.DataFrame:
        """One row per module with the columns of ``detectors.csv`` (a copy)."""
        return self._modules.copy()

    def layer_table(self) -> pd.DataFrame:
        """One row per layer, columns :data:`LAYER_COLUMNS` (derived from :meth:`modules`)."""
        return layer_table_from_detectors(self._modules)


# ---------------------------------------------------------------------------------------------
# module tables


def _barrel_frames(layer: BarrelLayer) -> dict[str, np.ndarray]:
    """Module centres and axes of a barrel layer, ordered by module id."""
    iz, iphi = np.divmod(np.arange(layer.n_modules), layer.n_phi)
    phi = -np.pi + (iphi + 0.5) * 2 * np.pi / layer.n_phi
    r = layer.radius + np.where(iz % 2 == 0, layer.stagger, -layer.stagger)
    z = (iz - (layer.n_z - 1) / 2) * layer.z_pitch
    normal_angle = phi + layer.tilt
    return {
        "module_id": iphi + iz * layer.n_phi + 1,
        "cx": r * np.cos(phi),
        "cy": r * np.sin(phi),
        "cz": z,
        # u axis: tangential rotated by the tilt; v axis: +z; w = u x v (outward normal)
        "u": np.stack([-np.sin(normal_angle), np.cos(normal_angle), 0 * phi], axis=1),
        "v": np.stack([0 * phi, 0 * phi, 1 + 0 * phi], axis=1),
        "w": np.stack([np.cos(normal_angle), np.sin(normal_angle), 0 * phi], axis=1),
    }


def _disk_frames(layer: DiskLayer) -> dict[str, np.ndarray]:
    """Module centres and axes of a disk, ordered by module id (phi of the centre)."""
    side = np.sign(layer.z)
    rows = []
    for ring_index, ring in enumerate(layer.rings):
        k = np.arange(ring.n_phi)
        phi = -np.pi + (k + 0.5) * 2 * np.pi / ring.n_phi
        offsets = np.asarray(ring.z_offsets)[k % len(ring.z_offsets)]
        rows.append(
            pd.DataFrame(
                {
                    "phi": phi,
                    "ring": ring_index,
                    "r": ring.radius,
                    "cz": layer.z + side * offsets,
                    "minhu": ring.half_u_min,
                    "maxhu": ring.half_u_max,
                    "hv": ring.half_v,
                }
            )
        )
    table = pd.concat(rows, ignore_index=True)
    table["k"] = np.concatenate([np.arange(ring.n_phi) for ring in layer.rings])
    table = table.sort_values(["phi", "ring"], ignore_index=True)
    phi = table["phi"].to_numpy()
    radial = np.stack([np.cos(phi), np.sin(phi), 0 * phi], axis=1)
    tangential = np.stack([-np.sin(phi), np.cos(phi), 0 * phi], axis=1)
    # v radial (outwards), w = u x v points away from the interaction point
    u = -side * tangential
    return {
        "module_id": np.arange(len(table)) + 1,
        "cx": table["r"].to_numpy() * np.cos(phi),
        "cy": table["r"].to_numpy() * np.sin(phi),
        "cz": table["cz"].to_numpy(),
        "u": u,
        "v": radial,
        "w": np.cross(u, radial),
        "minhu": table["minhu"].to_numpy(),
        "maxhu": table["maxhu"].to_numpy(),
        "hv": table["hv"].to_numpy(),
        "ring": table["ring"].to_numpy(),
        "k": table["k"].to_numpy(),
    }


def module_frames(layer: BarrelLayer | DiskLayer) -> dict[str, np.ndarray]:
    """Per-module arrays of a layer ordered by module id: ``module_id``, centre ``cx, cy, cz``,
    unit axes ``u, v, w`` (shape (n, 3)); disks also ``minhu, maxhu, hv, ring, k`` (ring index
    and phi index within the ring)."""
    return _barrel_frames(layer) if isinstance(layer, BarrelLayer) else _disk_frames(layer)


def _module_frame(
    layer: BarrelLayer | DiskLayer, f: dict[str, np.ndarray], minhu, maxhu, hv
) -> pd.DataFrame:
    n = len(f["module_id"])
    out = {
        "volume_id": np.full(n, layer.volume_id, dtype=np.int64),
        "layer_id": np.full(n, layer.layer_id, dtype=np.int64),
        "module_id": f["module_id"].astype(np.int64),
        "cx": f["cx"],
        "cy": f["cy"],
        "cz": f["cz"].astype(np.float64),
    }
    for i, axis in enumerate("xyz"):
        for name in "uvw":
            out[f"rot_{axis}{name}"] = f[name][:, i]
    out["module_t"] = np.full(n, layer.thickness)
    out["module_minhu"] = np.broadcast_to(minhu, n).astype(np.float64)
    out["module_maxhu"] = np.broadcast_to(maxhu, n).astype(np.float64)
    out["module_hv"] = np.broadcast_to(hv, n).astype(np.float64)
    out["pitch_u"] = np.full(n, layer.pitch_u)
    out["pitch_v"] = np.full(n, layer.pitch_v)
    return pd.DataFrame(out)[DETECTOR_COLUMNS]


def barrel_modules(layer: BarrelLayer) -> pd.DataFrame:
    """The modules of a barrel layer as ``detectors.csv`` rows."""
    f = _barrel_frames(layer)
    return _module_frame(layer, f, layer.half_u, layer.half_u, layer.half_v)


def disk_modules(layer: DiskLayer) -> pd.DataFrame:
    """The modules of a disk as ``detectors.csv`` rows."""
    f = _disk_frames(layer)
    return _module_frame(layer, f, f["minhu"], f["maxhu"], f["hv"])


# ---------------------------------------------------------------------------------------------
# the built-in TrackML layout

# layer-average material x/X0 at normal incidence (sensor + services): estimated from the
# spread of polar-angle changes between consecutive hits of the real event (Highland formula)
MATERIAL = {
    (PIXEL, "barrel"): 0.0085,
    (PIXEL, "disk"): 0.009,
    (SHORT_STRIP, "barrel"): 0.016,
    (SHORT_STRIP, "disk"): 0.016,
    (LONG_STRIP, "barrel"): 0.025,
    (LONG_STRIP, "disk"): 0.025,
}

_SENSOR = {  # thickness, pitch_u, pitch_v (mm)
    PIXEL: (0.15, 0.05, 0.05625),
    SHORT_STRIP: (0.25, 0.08, 1.2),
    LONG_STRIP: (0.35, 0.12, 10.8),
}


def _barrels() -> list[BarrelLayer]:
    spec = [  # volume, technology, radii, n_phi, n_z, z_pitch, stagger, tilt, hu, hv
        (8, PIXEL, (32.0, 72.0, 116.0, 172.0), (16, 32, 52, 78), 14, 70.0, 0.25, 0.14, 8.4, 36.0),
        (
            13,
            SHORT_STRIP,
            (260.0, 360.0, 500.0, 660.0),
            (40, 56, 78, 102),
            21,
            103.0,
            1.5,
            -0.15,
            24.0,
            54.0,
        ),
        (17, LONG_STRIP, (820.0, 1020.0), (120, 152), 21, 103.0, 1.5, -0.15, 24.0, 54.0),
    ]
    layers = []
    for volume, tech, radii, n_phis, n_z, pitch, stagger, tilt, hu, hv in spec:
        t, pu, pv = _SENSOR[tech]
        for i, (radius, n_phi) in enumerate(zip(radii, n_phis, strict=True)):
            layers.append(
                BarrelLayer(
                    volume,
                    2 * (i + 1),
                    radius,
                    n_phi,
                    n_z,
                    pitch,
                    stagger,
                    tilt,
                    hu,
                    hv,
                    t,
                    pu,
                    pv,
                    MATERIAL[(tech, "barrel")],
                    tech,
                )
            )
    return layers


_PIXEL_RINGS = (
    Ring(66.0, 40, 8.4, 8.4, 36.0, (2.5, -2.0, 2.0, -2.5)),
    Ring(140.0, 68, 8.4, 8.4, 36.0, (2.0, -2.0)),
)
_SHORT_STRIP_RINGS = (
    Ring(318.0, 54, 16.4, 24.2, 78.0, (-1.5, -4.5)),
    Ring(470.0, 56, 24.2, 32.2, 78.0, (4.5, 1.5)),
    Ring(622.0, 60, 32.2, 40.0, 78.0, (-1.5, -4.5)),
)
_LONG_STRIP_RINGS = (
    Ring(828.0, 48, 54.0, 64.2, 78.0, (-2.5, -5.5)),
    Ring(942.0, 50, 66.0, 72.0, 78.0, (5.5, 2.5)),
)
PIXEL_DISK_Z = (600.0, 700.0, 820.0, 960.0, 1100.0, 1300.0, 1500.0)
STRIP_DISK_Z = (1220.0, 1500.0, 1800.0, 2150.0, 2550.0, 2950.0)


def _disks() -> list[DiskLayer]:
    spec = [  # volume (negative z, positive z), technology, rings, abs z
        ((7, 9), PIXEL, _PIXEL_RINGS, PIXEL_DISK_Z),
        ((12, 14), SHORT_STRIP, _SHORT_STRIP_RINGS, STRIP_DISK_Z),
        ((16, 18), LONG_STRIP, _LONG_STRIP_RINGS, STRIP_DISK_Z),
    ]
    layers = []
    for (vol_neg, vol_pos), tech, rings, abs_z in spec:
        t, pu, pv = _SENSOR[tech]
        pitch_v = 10.4 if tech == LONG_STRIP else pv  # long-strip disks: 10.4 mm strips
        material = MATERIAL[(tech, "disk")]
        # layer ids increase with z on both sides (2 = most negative z on the negative side)
        for i, z in enumerate(sorted(-np.asarray(abs_z))):
            layers.append(
                DiskLayer(vol_neg, 2 * (i + 1), float(z), rings, t, pu, pitch_v, material, tech)
            )
        for i, z in enumerate(abs_z):
            layers.append(
                DiskLayer(vol_pos, 2 * (i + 1), float(z), rings, t, pu, pitch_v, material, tech)
            )
    return layers


def trackml_geometry() -> Geometry:
    """The built-in TrackML detector (18,728 modules) with beam pipe and pixel support tube.

    The beam pipe (r = 19 mm) and the pixel support tube (r = 200 mm) are where the real event
    has clusters of secondary-particle vertices; their material (x/X0 0.003 and 0.01) is an
    estimate.
    """
    return _TRACKML


_TRACKML = Geometry(
    barrels=tuple(_barrels()),
    disks=tuple(_disks()),
    passive=(
        PassiveCylinder("beam_pipe", 19.0, 3000.0, 0.003),
        PassiveCylinder("pixel_support_tube", 200.0, 3000.0, 0.01),
    ),
)


# ---------------------------------------------------------------------------------------------
# reading detectors.csv


class DetectorFormatError(DataError):
    """A malformed ``detectors.csv``: names the file, the column and what was expected."""

    @property
    def column(self) -> str | None:
        return self.field


def load_detectors(path: str | os.PathLike) -> pd.DataFrame:
    """Read a TrackML ``detectors.csv`` or ``.csv.gz`` (one row per module).

    Returns the columns :data:`DETECTOR_COLUMNS` (an unnamed leading index column is dropped):
    ids as int64, everything else float64.

    Raises:
        FileNotFoundError: the file does not exist.
        DetectorFormatError: a missing column, a non-numeric value or duplicated module ids.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such detectors file")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as handle:
        table = pd.read_csv(handle)
    table = table.drop(columns=[c for c in table.columns if str(c).startswith("Unnamed")])
    missing = [c for c in DETECTOR_COLUMNS if c not in table.columns]
    if missing:
        raise DetectorFormatError(
            path, missing[0], f"missing column(s) {missing}; expected {DETECTOR_COLUMNS}"
        )
    out = {}
    for column in DETECTOR_COLUMNS:
        values = pd.to_numeric(table[column], errors="coerce").to_numpy(np.float64)
        bad = ~np.isfinite(values)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise DetectorFormatError(
                path,
                column,
                f"expected a finite number, got {table[column].iloc[row]!r} (data row {row + 1})",
            )
        if column in _INT_COLUMNS:
            if not np.all(values == np.round(values)):
                raise DetectorFormatError(path, column, "expected integer ids")
            out[column] = values.astype(np.int64)
        else:
            out[column] = values
    modules = pd.DataFrame(out)
    if modules.duplicated(list(_INT_COLUMNS)).any():
        raise DetectorFormatError(path, "module_id", "duplicated (volume, layer, module) ids")
    return modules


def layer_table_from_detectors(modules: pd.DataFrame) -> pd.DataFrame:
    """Derive one row per layer from a module table (:func:`load_detectors` or
    :meth:`Geometry.modules`).

    A layer whose module normals are perpendicular to z is a barrel (``kind='barrel'``, ``r`` =
    middle of the module-centre radius range, ``z`` = 0); otherwise a disk (``z`` = middle of
    the module-centre z range, ``r`` = mean module-centre radius). ``r_min/r_max/z_min/z_max`` bound the module
    corners and edge midpoints on the mid-planes (and the closest approach of barrel planes).
    """
    m = modules
    corners = []  # corners and edge midpoints of each module
    points = ((-1, -1), (-1, 1), (1, -1), (1, 1), (0, -1), (0, 1), (-1, 0), (1, 0))
    for su, sv in points:
        hu = np.interp(sv, [-1, 1], [0, 1]) * (m["module_maxhu"] - m["module_minhu"])
        hu = hu + m["module_minhu"]
        pos = [
            m[f"c{a}"] + su * hu * m[f"rot_{a}u"] + sv * m["module_hv"] * m[f"rot_{a}v"]
            for a in "xyz"
        ]
        corners.append(np.stack(pos, axis=1))
    corners = np.stack(corners, axis=1)  # (n, 8, 3)
    corner_r = np.hypot(corners[..., 0], corners[..., 1])
    # closest approach of a barrel plane to the z axis (perpendicular foot inside the module)
    plane_r = np.abs(m["cx"] * m["rot_xw"] + m["cy"] * m["rot_yw"]).to_numpy()
    is_barrel = np.abs(m["rot_zw"].to_numpy()) < 0.5
    work = pd.DataFrame(
        {
            "volume_id": m["volume_id"].to_numpy(),
            "layer_id": m["layer_id"].to_numpy(),
            "barrel": is_barrel,
            "rc": np.hypot(m["cx"], m["cy"]).to_numpy(),
            "cz": m["cz"].to_numpy(),
            "r_lo": np.minimum(corner_r.min(axis=1), np.where(is_barrel, plane_r, np.inf)),
            "r_hi": corner_r.max(axis=1),
            "z_lo": corners[..., 2].min(axis=1),
            "z_hi": corners[..., 2].max(axis=1),
            "t": m["module_t"].to_numpy(),
            "pu": m["pitch_u"].to_numpy(),
            "pv": m["pitch_v"].to_numpy(),
        }
    )
    g = work.groupby(["volume_id", "layer_id"], sort=True)
    table = g.agg(
        barrel=("barrel", "all"),
        rc_lo=("rc", "min"),
        rc_hi=("rc", "max"),
        r_mean=("rc", "mean"),
        cz_lo=("cz", "min"),
        cz_hi=("cz", "max"),
        r_min=("r_lo", "min"),
        r_max=("r_hi", "max"),
        z_min=("z_lo", "min"),
        z_max=("z_hi", "max"),
        n_modules=("rc", "size"),
        thickness=("t", "median"),
        pitch_u=("pu", "median"),
        pitch_v=("pv", "median"),
    ).reset_index()
    barrel = table["barrel"].to_numpy()
    table["kind"] = np.where(barrel, "barrel", "disk")
    table["r"] = np.where(barrel, (table["rc_lo"] + table["rc_hi"]) / 2, table["r_mean"])
    table["z"] = np.where(barrel, 0.0, (table["cz_lo"] + table["cz_hi"]) / 2)
    table["n_modules"] = table["n_modules"].astype(np.int64)
    return table[LAYER_COLUMNS]
