"""``rooms``: procedural indoor scenes rendered analytically in torch (the embedded default dataset;
no files, no downloads).

Each scene is a box room (floor at ``y = 0``, world +y up) with solid-textured walls, floor and
ceiling (checker, stripes, marble, bricks, dots, plain; random colours and scales), a few objects
(rotated boxes, spheres, vertical cylinders) that occlude each other, Lambertian shading from a
point light plus ambient (with hard shadows), and a smooth camera path inside the room that looks
across it at a slowly drifting point. Frames are rendered on demand by vectorised ray casting, at
any resolution, with z-depth. Everything is a pure function of the scene seed; the train,
validation and test splits draw seeds from disjoint ranges.

Difficulty knobs: ``min_objects``/``max_objects``, ``texture_frequency``, ``path_radius``,
``path_arc``, ``frames_per_scene``.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import Tensor

from scenetok.data.dataset import BaseSceneDataset, SceneDatasetConfig
from scenetok.geometry.conventions import look_at
from scenetok.geometry.rays import ray_bundle
from scenetok.types import Cameras

# Disjoint seed ranges per split: scene i of a split uses seed SPLIT_SEED_BASE[split] + i. The
# ranges stay inside 32 bits because torch's CPU generator only uses the low 32 bits of a seed.
MAX_SCENES_PER_SPLIT = 1 << 30
SPLIT_SEED_BASE = {"train": 0, "validation": 1 << 31, "test": (1 << 31) + (1 << 30)}

# Texture families (solid textures, evaluated at the 3D hit point in the surface's own frame).
CHECKER, STRIPES, MARBLE, BRICKS, DOTS, PLAIN = range(6)
NUM_FAMILIES = 6
NOISE_WAVES = 4
_EPS = 1e-4


@dataclass
class RoomScene:
    """Parameters of one procedural scene (all tensors float32 on CPU).

    Attributes:
        half_size: ``(3,)`` room half extents in x, (full) height in y, half extent in z; the room
            spans ``[-hx, hx] x [0, hy] x [-hz, hz]``.
        light: ``(3,)`` point-light position.
        ambient: ambient light fraction.
        spheres: ``(S, 4)`` centre xyz + radius.
        boxes: ``(B, 7)`` centre xyz + half extents xyz + yaw (radians, about +y).
        cylinders: ``(C, 5)`` centre xyz + radius + half height (vertical axis).
        materials: dict of ``(M, ...)`` material tensors; ids 0-5 are the room faces
            (x-, x+, floor, ceiling, z-, z+), then spheres, boxes, cylinders in order.
        extrinsics: ``(V, 4, 4)`` OpenCV c2w of every frame on the camera path.
        intrinsics: ``(3, 3)`` normalised intrinsics shared by all frames.
    """

    half_size: Tensor
    light: Tensor
    ambient: float
    spheres: Tensor
    boxes: Tensor
    cylinders: Tensor
    materials: dict[str, Tensor]
    extrinsics: Tensor
    intrinsics: Tensor


class RoomsDataset(BaseSceneDataset):
    """Procedural rooms; see the module docstring."""

    @dataclass
    class Config(SceneDatasetConfig):
        """Rooms config (shared fields: see ``SceneDatasetConfig``).

        Attributes:
            num_scenes: scenes in the configured split (fixed size; make it large for "infinite").
            frames_per_scene: frames on each scene's camera path.
            min_objects: fewest objects per room.
            max_objects: most objects per room.
            texture_frequency: multiplier of every texture's spatial frequency (1 = moderate,
                learnable at 32-64 px; higher is harder and aliases at low resolution).
            path_radius: camera-path ellipse radius as a fraction of the room half-size (0.1-0.7);
                larger means more parallax.
            path_arc: angle (radians) swept by the camera path over the scene's frames.
            fov_degrees: horizontal and vertical field of view.
            shadows: cast hard shadows from the point light (one extra ray per pixel).
            antialias: supersampling factor per axis (1 = one ray per pixel; depth is then exact
                at pixel centres, otherwise it is the mean over sub-samples).
            return_depth: include ``depths`` ``(V, 1, H, W)`` in samples.
            cache_scenes: scene descriptions kept in memory (they are tiny).
            cache_frames: scenes whose frames are *all* rendered on first use and kept in memory
                (least recently used first out; 0 = render every request). With a fixed, small
                ``num_scenes`` that training revisits, this makes data loading nearly free.
        """

        num_scenes: int = 10_000
        frames_per_scene: int = 48
        min_objects: int = 3
        max_objects: int = 6
        texture_frequency: float = 1.0
        path_radius: float = 0.45
        path_arc: float = 1.0
        fov_degrees: float = 60.0
        shadows: bool = True
        antialias: int = 1
        return_depth: bool = True
        cache_scenes: int = 256
        cache_frames: int = 0

        def __post_init__(self) -> None:
            super().__post_init__()
            if not 1 <= self.num_scenes <= MAX_SCENES_PER_SPLIT:
                raise ValueError(f"num_scenes must be in [1, 2**30], got {self.num_scenes}")
            if self.frames_per_scene < 2:
                raise ValueError(f"frames_per_scene must be >= 2, got {self.frames_per_scene}")
            if not 0 <= self.min_objects <= self.max_objects:
                raise ValueError(
                    f"min_objects/max_objects must satisfy 0 <= min <= max, got {self.min_objects}, {self.max_objects}"
                )
            if self.texture_frequency <= 0:
                raise ValueError(f"texture_frequency must be > 0, got {self.texture_frequency}")
            if not 0.05 <= self.path_radius <= 0.75:
                raise ValueError(f"path_radius must be in [0.05, 0.75], got {self.path_radius}")
            if not 0 < self.fov_degrees < 150:
                raise ValueError(f"fov_degrees must be in (0, 150), got {self.fov_degrees}")
            if self.antialias < 1:
                raise ValueError(f"antialias must be >= 1, got {self.antialias}")

    presets = {
        "easy": {"min_objects": 2, "max_objects": 3, "texture_frequency": 0.7, "path_radius": 0.3},
        "hard": {"min_objects": 5, "max_objects": 8, "texture_frequency": 1.6, "path_radius": 0.6,
                 "path_arc": 1.6},
    }

    def __init__(self, config: Config | None = None) -> None:
        super().__init__()
        self.config = config if config is not None else self.Config()
        self._scene_cache: OrderedDict[int, RoomScene] = OrderedDict()
        self._frame_cache: OrderedDict[int, dict[str, Tensor]] = OrderedDict()

    # ---- SceneDataset API --------------------------------------------------------------------
    def scenes(self) -> list[str]:
        return [self.scene_key(i) for i in range(self.config.num_scenes)]

    def scene_key(self, index: int) -> str:
        return f"rooms-{self.config.split}-{index:07d}"

    def scene_index(self, scene: str) -> int:
        """Inverse of :meth:`scene_key`; ``KeyError`` for keys of another split or out of range."""
        prefix = f"rooms-{self.config.split}-"
        if not scene.startswith(prefix) or not scene[len(prefix):].isdigit():
            raise KeyError(f"{scene!r} is not a scene of the rooms {self.config.split} split")
        index = int(scene[len(prefix):])
        if index >= self.config.num_scenes:
            raise KeyError(f"{scene!r}: index {index} >= num_scenes={self.config.num_scenes}")
        return index

    def num_frames(self, scene: str) -> int:
        self.scene_index(scene)
        return self.config.frames_per_scene

    def frame_cameras(self, scene: str) -> Cameras:
        description = self.describe(scene)
        count = description.extrinsics.shape[0]
        return Cameras(description.extrinsics, description.intrinsics.expand(count, 3, 3).clone())

    def load_views(self, scene: str, indices: list[int]) -> dict[str, Tensor]:
        index = torch.as_tensor(indices, dtype=torch.long)
        if self.config.cache_frames:
            frames = self._all_frames(scene)
            return {**{key: value[index] for key, value in frames.items()}, "indices": index}
        return self._render(scene, indices)

    def _all_frames(self, scene: str) -> dict[str, Tensor]:
        key = self.scene_index(scene)
        cached = self._frame_cache.get(key)
        if cached is None:
            cached = self._render(scene, list(range(self.config.frames_per_scene)))
            del cached["indices"]
            self._frame_cache[key] = cached
            if len(self._frame_cache) > self.config.cache_frames:
                self._frame_cache.popitem(last=False)
        else:
            self._frame_cache.move_to_end(key)
        return cached

    def _render(self, scene: str, indices: list[int]) -> dict[str, Tensor]:
        description = self.describe(scene)
        index = torch.as_tensor(indices, dtype=torch.long)
        cameras = Cameras(description.extrinsics[index], description.intrinsics.expand(len(indices), 3, 3).clone())
        factor = self.config.antialias
        images, depths = render_room(
            description, cameras, self.config.height * factor, self.config.width * factor,
            shadows=self.config.shadows,
        )
        if factor > 1:
            images = torch.nn.functional.avg_pool2d(images, factor)
            depths = torch.nn.functional.avg_pool2d(depths, factor)
        views = {"images": images, "extrinsics": cameras.extrinsics, "intrinsics": cameras.intrinsics,
                 "indices": index}
        if self.config.return_depth:
            views["depths"] = depths
        return views

    # ---- scene generation --------------------------------------------------------------------
    def describe(self, scene: str) -> RoomScene:
        """The (cached) parameters of ``scene``."""
        index = self.scene_index(scene)
        cached = self._scene_cache.get(index)
        if cached is None:
            cached = generate_room(SPLIT_SEED_BASE[self.config.split] + index, self.config)
            self._scene_cache[index] = cached
            if len(self._scene_cache) > self.config.cache_scenes:
                self._scene_cache.popitem(last=False)
        else:
            self._scene_cache.move_to_end(index)
        return cached


# ---- procedural generation ---------------------------------------------------------------------

def _uniform(generator: torch.Generator, low: float, high: float, *shape: int) -> Tensor:
    return low + (high - low) * torch.rand(shape or (1,), generator=generator)


def _random_materials(generator: torch.Generator, count: int, frequency: float, plain_weight: float) -> dict[str, Tensor]:
    """``count`` random materials: family, two colours, scale, direction, phase and noise waves."""
    weights = torch.tensor([1.0, 1.0, 1.0, 1.0, 0.7, plain_weight])
    family = torch.multinomial(weights, count, replacement=True, generator=generator)
    base = _uniform(generator, 0.15, 0.9, count, 3)
    other = _uniform(generator, 0.1, 0.95, count, 3)
    mix = _uniform(generator, 0.35, 0.8, count, 1)
    second = base * (1 - mix) + other * mix
    # keep the two colours apart so patterns stay visible (and learnable)
    second = torch.where((second - base).abs().sum(-1, keepdim=True) < 0.25, 1.0 - base * 0.8, second)
    # ~1-3 pattern periods per metre at frequency 1
    scale = frequency * torch.exp(_uniform(generator, math.log(1.0), math.log(3.0), count))
    direction = torch.nn.functional.normalize(torch.randn(count, 3, generator=generator), dim=-1)
    phase = _uniform(generator, 0.0, 10.0, count, 3)
    waves = torch.randn(count, NOISE_WAVES, 3, generator=generator) * 1.5 * frequency
    wave_phase = _uniform(generator, 0.0, 2 * math.pi, count, NOISE_WAVES)
    return {"family": family, "color_a": base, "color_b": second, "scale": scale,
            "direction": direction, "phase": phase, "waves": waves, "wave_phase": wave_phase}


def generate_room(seed: int, config: RoomsDataset.Config) -> RoomScene:
    """Sample a scene from ``seed`` (deterministic) under ``config``'s difficulty knobs."""
    generator = torch.Generator().manual_seed(int(seed))
    half = torch.cat([_uniform(generator, 2.0, 3.2), _uniform(generator, 2.5, 3.2), _uniform(generator, 2.0, 3.2)])
    hx, height, hz = half.tolist()

    # Camera path: an elliptical arc around the room centre at eye height, looking across the room
    # at a point that drifts slowly, so views overlap but see the objects from changing angles.
    frames = config.frames_per_scene
    progress = torch.linspace(0.0, 1.0, frames)
    radius_x, radius_z = config.path_radius * hx, config.path_radius * hz
    start = float(_uniform(generator, 0.0, 2 * math.pi))
    direction = 1.0 if float(torch.rand(1, generator=generator)) < 0.5 else -1.0
    angle = start + direction * config.path_arc * progress
    eye_height = float(_uniform(generator, 1.2, 1.7))
    bob = 0.1 * torch.sin(2 * math.pi * progress * float(_uniform(generator, 0.5, 1.5)) + float(_uniform(generator, 0, 6)))
    eyes = torch.stack([radius_x * torch.cos(angle), eye_height + bob, radius_z * torch.sin(angle)], dim=-1)
    drift_phase = _uniform(generator, 0.0, 2 * math.pi, 3)
    drift = torch.stack([
        0.6 * torch.sin(2 * math.pi * 0.7 * progress + drift_phase[0]),
        0.3 * torch.sin(2 * math.pi * 0.5 * progress + drift_phase[1]) - 0.2,
        0.6 * torch.sin(2 * math.pi * 0.6 * progress + drift_phase[2]),
    ], dim=-1)
    # look roughly at the room centre from the path (the centre objects occlude the far walls)
    targets = torch.tensor([0.0, 1.0, 0.0]) + drift - 0.35 * eyes * torch.tensor([1.0, 0.0, 1.0])
    extrinsics = look_at(eyes, targets, torch.tensor([0.0, 1.0, 0.0]))
    focal = 0.5 / math.tan(math.radians(config.fov_degrees) / 2)
    intrinsics = torch.tensor([[focal, 0.0, 0.5], [0.0, focal, 0.5], [0.0, 0.0, 1.0]])

    # Objects: footprints keep clear of the camera path and the walls.
    count = int(torch.randint(config.min_objects, config.max_objects + 1, (1,), generator=generator))
    kinds = torch.randint(0, 3, (count,), generator=generator).tolist()
    spheres, boxes, cylinders = [], [], []
    placed: list[tuple[float, float, float]] = []  # (x, z, footprint radius)
    for kind in kinds:
        size = float(_uniform(generator, 0.25, 0.6))
        for _attempt in range(30):
            # half the objects near the centre (occluders), the rest anywhere free
            spread = 0.8 if float(torch.rand(1, generator=generator)) < 0.5 else 1.0
            x = float(_uniform(generator, -hx + size + 0.1, hx - size - 0.1)) * spread
            z = float(_uniform(generator, -hz + size + 0.1, hz - size - 0.1)) * spread
            clearance = torch.sqrt((eyes[:, 0] - x) ** 2 + (eyes[:, 2] - z) ** 2).min()
            overlap = any(math.hypot(x - px, z - pz) < size + pr + 0.05 for px, pz, pr in placed)
            if clearance > size * 1.45 + 0.7 and not overlap:
                break
        else:
            continue  # no free spot: fewer objects in this room
        placed.append((x, z, size * 1.42))
        if kind == 0:
            radius = size
            lift = float(_uniform(generator, 0.0, 0.8)) if float(torch.rand(1, generator=generator)) < 0.3 else 0.0
            spheres.append([x, radius + lift, z, radius])
        elif kind == 1:
            half_extent = _uniform(generator, 0.5, 1.0, 3) * size
            half_extent[1] = float(_uniform(generator, 0.2, 0.9)) * min(height / 2 - 0.1, 1.2)
            yaw = float(_uniform(generator, 0.0, math.pi))
            boxes.append([x, float(half_extent[1]), z, *half_extent.tolist(), yaw])
        else:
            half_height = float(_uniform(generator, 0.2, 1.0)) * min(height / 2 - 0.1, 1.1)
            cylinders.append([x, half_height, z, size * 0.9, half_height])

    num_materials = 6 + len(spheres) + len(boxes) + len(cylinders)
    materials = _random_materials(generator, num_materials, config.texture_frequency, plain_weight=0.6)
    light = torch.cat([_uniform(generator, -0.6 * hx, 0.6 * hx), torch.tensor([height - 0.3]),
                       _uniform(generator, -0.6 * hz, 0.6 * hz)])
    return RoomScene(
        half_size=half,
        light=light,
        ambient=float(_uniform(generator, 0.3, 0.45)),
        spheres=torch.tensor(spheres, dtype=torch.float32).reshape(-1, 4),
        boxes=torch.tensor(boxes, dtype=torch.float32).reshape(-1, 7),
        cylinders=torch.tensor(cylinders, dtype=torch.float32).reshape(-1, 5),
        materials=materials,
        extrinsics=extrinsics,
        intrinsics=intrinsics,
    )


# ---- ray casting ---------------------------------------------------------------------------------
# Every intersector takes rays (R, 3) and returns, per ray, the nearest hit among its objects:
# distance t (inf when missed), unit normal (R, 3), texture point (R, 3, in the object frame) and
# the object's index. Rays start inside the room and outside every object.

def _nearest(t: Tensor) -> tuple[Tensor, Tensor]:
    best, index = t.min(dim=1)
    return best, index


def _intersect_spheres(origins: Tensor, directions: Tensor, spheres: Tensor):
    rays = origins.shape[0]
    if spheres.shape[0] == 0:
        return torch.full((rays,), math.inf), None
    centres, radii = spheres[:, :3], spheres[:, 3]
    # |o - c|^2 and (o - c).d expanded into matmuls: no (R, S, 3) temporaries (3x faster)
    b = (origins * directions).sum(-1, keepdim=True) - directions @ centres.T
    c = (origins * origins).sum(-1, keepdim=True) - 2 * origins @ centres.T + (centres * centres).sum(-1) - radii**2
    discriminant = b * b - c
    t = -b - torch.sqrt(discriminant.clamp(min=0))
    t = torch.where((discriminant > 0) & (t > _EPS), t, math.inf)
    best, index = _nearest(t)
    return best, index


def _box_frames(boxes: Tensor) -> Tensor:
    """Object-to-world rotations ``(B, 3, 3)`` (yaw about +y)."""
    cos, sin = torch.cos(boxes[:, 6]), torch.sin(boxes[:, 6])
    zero, one = torch.zeros_like(cos), torch.ones_like(cos)
    return torch.stack([torch.stack([cos, zero, sin], -1), torch.stack([zero, one, zero], -1),
                        torch.stack([-sin, zero, cos], -1)], dim=-2)


def _intersect_boxes(origins: Tensor, directions: Tensor, boxes: Tensor):
    rays = origins.shape[0]
    if boxes.shape[0] == 0:
        return torch.full((rays,), math.inf), None, None
    rotation = _box_frames(boxes)  # (B, 3, 3)
    local_origin = torch.einsum("bji,rbj->rbi", rotation, origins[:, None, :] - boxes[None, :, :3])
    local_direction = torch.einsum("bji,rj->rbi", rotation, directions)
    # avoid division by exactly zero; the sign keeps the slab test right
    safe = torch.where(local_direction.abs() < 1e-9, torch.full_like(local_direction, 1e-9), local_direction)
    inverse = 1.0 / safe
    half = boxes[None, :, 3:6]
    t1, t2 = (-half - local_origin) * inverse, (half - local_origin) * inverse
    t_near, axis = torch.minimum(t1, t2).max(dim=-1)
    t_far = torch.maximum(t1, t2).min(dim=-1).values
    t = torch.where((t_near < t_far) & (t_near > _EPS), t_near, math.inf)
    best, index = _nearest(t)
    return best, index, (rotation, local_origin, local_direction, axis)


def _intersect_cylinders(origins: Tensor, directions: Tensor, cylinders: Tensor):
    rays = origins.shape[0]
    if cylinders.shape[0] == 0:
        return torch.full((rays,), math.inf), None, None
    offset = origins[:, None, :] - cylinders[None, :, :3]  # (R, C, 3)
    radius, half_height = cylinders[None, :, 3], cylinders[None, :, 4]
    dx, dy, dz = directions[:, None, 0], directions[:, None, 1], directions[:, None, 2]
    ox, oy, oz = offset[..., 0], offset[..., 1], offset[..., 2]
    a = (dx * dx + dz * dz).clamp(min=1e-12)
    b = ox * dx + oz * dz
    c = ox * ox + oz * oz - radius**2
    discriminant = b * b - a * c
    t_side = (-b - torch.sqrt(discriminant.clamp(min=0))) / a
    y_side = oy + t_side * dy
    side_ok = (discriminant > 0) & (t_side > _EPS) & (y_side.abs() <= half_height)
    t_side = torch.where(side_ok, t_side, math.inf)
    # the cap facing the ray origin (rays start outside the cylinder)
    cap_y = torch.where(oy > 0, half_height, -half_height)
    safe_dy = torch.where(dy.abs() < 1e-9, torch.full_like(dy, 1e-9), dy)
    t_cap = (cap_y - oy) / safe_dy
    cap_x, cap_z = ox + t_cap * dx, oz + t_cap * dz
    cap_ok = (t_cap > _EPS) & (cap_x * cap_x + cap_z * cap_z <= radius**2)
    t_cap = torch.where(cap_ok, t_cap, math.inf)
    t = torch.minimum(t_side, t_cap)
    best, index = _nearest(t)
    return best, index, (t_cap, t_side)


def _intersect_objects(scene: RoomScene, origins: Tensor, directions: Tensor) -> Tensor:
    """Nearest object distance per ray (for shadows)."""
    t = _intersect_spheres(origins, directions, scene.spheres)[0]
    t = torch.minimum(t, _intersect_boxes(origins, directions, scene.boxes)[0])
    return torch.minimum(t, _intersect_cylinders(origins, directions, scene.cylinders)[0])


def _gather(values: Tensor, index: Tensor) -> Tensor:
    """``values`` ``(R, N, ...)`` at per-ray object ``index`` ``(R,)`` -> ``(R, ...)``."""
    return values[torch.arange(values.shape[0]), index]


def _trace(scene: RoomScene, origins: Tensor, directions: Tensor):
    """Nearest surface per ray: ``t``, normal, texture point and material id."""
    rays = origins.shape[0]
    # Room: exit distance through the box the rays start in.
    low = torch.stack([-scene.half_size[0], torch.tensor(0.0), -scene.half_size[2]])
    high = torch.stack([scene.half_size[0], scene.half_size[1], scene.half_size[2]])
    safe = torch.where(directions.abs() < 1e-9, torch.full_like(directions, 1e-9), directions)
    bound = torch.where(safe > 0, high, low)
    t_axes = (bound - origins) / safe
    t, axis = t_axes.min(dim=-1)
    positive = torch.gather(safe, 1, axis[:, None])[:, 0] > 0
    material = 2 * axis + positive.long()
    normal = torch.zeros(rays, 3)
    normal.scatter_(1, axis[:, None], torch.where(positive, -1.0, 1.0)[:, None])
    point = origins + t[:, None] * directions  # room textures use world coordinates

    offset = 6
    # spheres
    t_s, index = _intersect_spheres(origins, directions, scene.spheres)
    if index is not None:
        hit = t_s < t
        centre = scene.spheres[index, :3]
        hit_point = origins + t_s.clamp(max=1e6)[:, None] * directions
        t = torch.where(hit, t_s, t)
        normal = torch.where(hit[:, None], (hit_point - centre) / scene.spheres[index, 3:4], normal)
        point = torch.where(hit[:, None], hit_point - centre, point)
        material = torch.where(hit, offset + index, material)
    offset += scene.spheres.shape[0]
    # boxes
    t_b, index, extra = _intersect_boxes(origins, directions, scene.boxes)
    if index is not None:
        hit = t_b < t
        rotation, local_origin, local_direction, axis_b = extra
        local_o, local_d = _gather(local_origin, index), _gather(local_direction, index)
        face_axis = _gather(axis_b, index)
        local_normal = torch.zeros(rays, 3)
        sign = -torch.sign(torch.gather(local_d, 1, face_axis[:, None]))
        local_normal.scatter_(1, face_axis[:, None], sign)
        world_normal = torch.einsum("rij,rj->ri", rotation[index], local_normal)
        t = torch.where(hit, t_b, t)
        normal = torch.where(hit[:, None], world_normal, normal)
        point = torch.where(hit[:, None], local_o + t_b.clamp(max=1e6)[:, None] * local_d, point)
        material = torch.where(hit, offset + index, material)
    offset += scene.boxes.shape[0]
    # cylinders
    t_c, index, extra = _intersect_cylinders(origins, directions, scene.cylinders)
    if index is not None:
        hit = t_c < t
        t_cap, _ = extra
        on_cap = _gather(t_cap, index) <= t_c
        centre = scene.cylinders[index, :3]
        local = origins + t_c.clamp(max=1e6)[:, None] * directions - centre
        side_normal = torch.nn.functional.normalize(local * torch.tensor([1.0, 0.0, 1.0]), dim=-1)
        cap_normal = torch.zeros(rays, 3)
        cap_normal[:, 1] = torch.sign(local[:, 1])
        cylinder_normal = torch.where(on_cap[:, None], cap_normal, side_normal)
        t = torch.where(hit, t_c, t)
        normal = torch.where(hit[:, None], cylinder_normal, normal)
        point = torch.where(hit[:, None], local, point)
        material = torch.where(hit, offset + index, material)
    return t, normal, point, material


def _texture(materials: dict[str, Tensor], material: Tensor, point: Tensor) -> Tensor:
    """Albedo ``(R, 3)`` of the solid textures at ``point`` for per-ray ``material`` ids."""
    family = materials["family"][material]
    scale = materials["scale"][material][:, None]
    p = point * scale + materials["phase"][material]
    along = (point * materials["direction"][material]).sum(-1) * scale[:, 0]
    waves = materials["waves"][material]  # (R, K, 3)
    noise = torch.sin(torch.einsum("rkc,rc->rk", waves, point) + materials["wave_phase"][material]).mean(-1)

    checker = (torch.floor(p).sum(-1) % 2).clamp(0, 1)
    stripes = torch.sigmoid(4.0 * torch.sin(2 * math.pi * along))
    marble = 0.5 + 0.5 * torch.sin(2 * math.pi * along + 3.0 * noise)
    row = torch.floor(p[:, 1] * 2.0)
    course = (p[:, 0] + p[:, 2]) + 0.5 * (row % 2)
    mortar = (torch.frac(p[:, 1] * 2.0) < 0.1) | (torch.frac(course) < 0.06)
    bricks = torch.where(mortar, 1.0, 0.15 * (noise + 1))
    dots = (torch.linalg.vector_norm(torch.frac(p) - 0.5, dim=-1) < 0.3).float()
    plain = 0.15 + 0.15 * noise
    patterns = torch.stack([checker, stripes, marble, bricks, dots, plain], dim=-1)
    mix = patterns.gather(1, family[:, None])
    return materials["color_a"][material] * (1 - mix) + materials["color_b"][material] * mix


def render_room(scene: RoomScene, cameras: Cameras, height: int, width: int, *, shadows: bool = True
                ) -> tuple[Tensor, Tensor]:
    """Render ``cameras`` (batch ``(V,)``) of ``scene``.

    Returns:
        ``images`` ``(V, 3, H, W)`` in ``[0, 1]`` and ``depths`` ``(V, 1, H, W)``: z-depth along each
        camera's optical axis (pixel-centre rays, see :mod:`scenetok.geometry.rays`).
    """
    views = cameras.shape[0]
    origins, directions = ray_bundle(cameras, height, width)  # (V, H, W, 3)
    forward = cameras.extrinsics[:, None, None, :3, 2]
    z_factor = (directions * forward).sum(-1).reshape(-1)
    origins, directions = origins.reshape(-1, 3), directions.reshape(-1, 3)

    t, normal, point, material = _trace(scene, origins, directions)
    hit_point = origins + t[:, None] * directions
    albedo = _texture(scene.materials, material, point)

    to_light = scene.light - hit_point
    distance = torch.linalg.vector_norm(to_light, dim=-1)
    light_direction = to_light / distance[:, None]
    diffuse = (normal * light_direction).sum(-1).clamp(min=0.0)
    if shadows:
        blocked = _intersect_objects(scene, hit_point + normal * 1e-3, light_direction) < distance
        diffuse = torch.where(blocked, 0.0, diffuse)
    falloff = 1.0 / (1.0 + 0.04 * distance**2)
    shading = scene.ambient + (1.0 - scene.ambient) * 1.3 * diffuse * falloff
    colour = (albedo * shading[:, None]).clamp(0.0, 1.0)

    images = colour.reshape(views, height, width, 3).permute(0, 3, 1, 2).contiguous()
    depths = (t * z_factor).reshape(views, 1, height, width)
    return images, depths
