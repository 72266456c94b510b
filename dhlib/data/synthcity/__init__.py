"""SynthCity: a procedural street world written to disk in the real dataset formats.

Nothing can be downloaded on a laptop in a classroom or in CI, yet every loader,
transform and evaluator of the paper tier must run. SynthCity renders street scenes
with a pin-hole camera over a ground plane, so the quick tier is a real (small)
segmentation problem:

* perspective road with lane marks, kerbed sidewalks, grass verges, building facades with
  windows and floors, hedges and trees, low walls and fences, poles with signs and traffic
  lights, cars and buses on the road, people on the sidewalk, a far backdrop and a sky;
* objects are placed in world metres and projected, so their image size follows depth
  (``pixels = focal * metres / Z``); near objects occlude far ones (painter's order);
* colours are drawn from overlapping families (grey asphalt, grey paving, grey concrete,
  grey cars, white clouds, white facades...) under random exposure, white balance,
  sun/shade and sensor noise, so a pixel's colour alone does not tell its class:
  a per-pixel RGB classifier scores far below a CNN (``benchmarks/bench_synthcity.py``).

It writes three trees (see :func:`export`):

1. a **Cityscapes** tree (``leftImg8bit`` + ``gtFine`` with official *label ids*);
2. an **ADE20K-format negatives** tree: indoor scenes of man-made objects with straight or
   circular outlines, periodic patterns (stripes, checks, dots, planks) or irregular finishes
   (fabric, marble, brushed metal), lit flat or from one side, annotated with class ids
   1-150 (0 = unlabeled);
3. a **Fishyscapes-Static-format** test tree: new street scenes with pasted anomalies from
   a *disjoint* family -- organic, smoothly shaded, star-convex shapes (stones, creatures,
   spotted balls) -- labelled 0 inlier / 1 anomaly / 255 void.

Training negatives come only from tree 2; evaluation anomalies only from tree 3, so the
evaluation measures generalisation to unseen anomalies.

Every image is a pure function of ``(seed, stream, index)``: the same call always gives the
same pixels, on any machine, in any order, in parallel or not.

The package, one concern a module: :mod:`.streams` (random streams), :mod:`.canvas`
(drawing), :mod:`.camera`, :mod:`.street` (ground and buildings), :mod:`.objects` (things on
the street), :mod:`.scene` (a street scene assembled), :mod:`.negatives`, :mod:`.anomalies`
and :mod:`.export`. The names below are re-exported so that ``synthcity.<name>`` keeps
working; to replace a function for a test, patch it in the module that calls it.
"""
from .anomalies import (ANOMALY_KINDS, _anomaly_sprite, held_out_anomaly_scenes,
                        render_anomaly_scene)
from .camera import Camera, random_camera
from .canvas import Canvas, finish, smooth_noise
from .export import (CITIES, KINDS, TREES, SynthCityConflict, _export_one, cityscapes_stem,
                     ensure, export, export_files, export_manifest, owned_trees, remove_export,
                     uses_synthcity)
from .negatives import (ADE_FLOOR, ADE_WALL, NEGATIVE_KINDS, NEGATIVE_LIGHTS, NEGATIVE_SURFACES,
                        _irregular_texture, _periodic_texture, _room_light, render_negative)
from .objects import _person
from .scene import random_light, render_scene, render_street
from .street import (BUILDING, BUS, CAR, EGO, FENCE, LIGHT, PERSON, POLE, ROAD, SIDEWALK, SIGN,
                     SKY, TERRAIN, VEGETATION, WALL, StreetLayout, random_layout)
from .streams import GENERATOR_VERSION, STREAMS, rng_for

__all__ = [
    "ANOMALY_KINDS", "held_out_anomaly_scenes", "render_anomaly_scene",
    "Camera", "random_camera", "Canvas", "finish", "smooth_noise",
    "CITIES", "KINDS", "TREES", "SynthCityConflict", "cityscapes_stem", "ensure", "export",
    "export_files", "export_manifest", "owned_trees", "remove_export", "uses_synthcity",
    "ADE_FLOOR", "ADE_WALL", "NEGATIVE_KINDS", "NEGATIVE_LIGHTS", "NEGATIVE_SURFACES", "render_negative",
    "random_light", "render_scene", "render_street",
    "BUILDING", "BUS", "CAR", "EGO", "FENCE", "LIGHT", "PERSON", "POLE", "ROAD", "SIDEWALK", "SIGN",
    "SKY", "TERRAIN", "VEGETATION", "WALL", "StreetLayout", "random_layout",
    "GENERATOR_VERSION", "STREAMS", "rng_for",
    # helpers that tests and benchmarks reach through the package
    "_anomaly_sprite", "_export_one", "_irregular_texture", "_periodic_texture", "_room_light", "_person",
]
