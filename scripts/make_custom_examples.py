"""Write the example images of ``data/custom_fs_static/`` (shipped in git; notebook 08).

Three SynthCity anomaly scenes from a seed that no profile uses (2026), so they are new to
every quick model, stored the way a user would store their own photos: ``images/*.jpg`` and,
optionally, ``labels/*.png`` with 0 inlier / 1 anomaly / 255 void.

    python scripts/make_custom_examples.py [--root data/custom_fs_static]
"""
import argparse
from pathlib import Path

from PIL import Image

from dhlib.data.synthcity import render_anomaly_scene

SEED, INDICES = 2026, (0, 1, 2)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="data/custom_fs_static")
    root = Path(parser.parse_args().root)
    for k in INDICES:
        image, ood, _ = render_anomaly_scene(SEED, k)
        for folder, array, name, options in (("images", image, f"street_{k}.jpg", {"quality": 90}),
                                             ("labels", ood, f"street_{k}.png", {"optimize": True})):
            path = root / folder / name
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(path, **options)
            print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
