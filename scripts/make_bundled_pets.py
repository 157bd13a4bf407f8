"""Make the downscaled Pets sample that ships inside lrkit (src/lrkit/data/bundled/pets/).

Every photo of the sample (185 Oxford-IIIT Pets photos, 5 per breed) is resized so that its
longest side is `--longest` pixels (never enlarged), converted to RGB and saved as a
baseline JPEG at `--quality`, without metadata; names stay as in the dataset
(`<Breed_name>_<n>.jpg`). The attribution and licence go beside them as README.md.

    python scripts/make_bundled_pets.py [--src ../shared/pets_sample] [--longest 256]

Nothing here is chosen by looking at the photos: the sizes only keep the package small.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SRC = ROOT.parent / "shared" / "pets_sample"
DEFAULT_DST = ROOT / "src" / "lrkit" / "data" / "bundled" / "pets"

README = """# Bundled Oxford-IIIT Pet sample

`images/` holds {n} photos from the Oxford-IIIT Pet Dataset, 5 per breed for all 37 breeds
(12 cat breeds with capitalised names, 25 dog breeds in lower case), named as in the dataset
(`<Breed_name>_<number>.jpg`), downscaled so that the longest side is at most {longest} pixels
(JPEG quality {quality}) by `scripts/make_bundled_pets.py`. `lrkit demo` fine-tunes an
ImageNet-pretrained network on them with no network access.

Attribution: O. M. Parkhi, A. Vedaldi, A. Zisserman, C. V. Jawahar, "Cats and Dogs",
IEEE Conference on Computer Vision and Pattern Recognition (CVPR), 2012.
https://www.robots.ox.ac.uk/~vgg/data/pets/

Licence: the Oxford-IIIT Pet Dataset is available under the Creative Commons
Attribution-ShareAlike 4.0 International licence (CC BY-SA 4.0,
https://creativecommons.org/licenses/by-sa/4.0/); the copyright of each image remains with
its owner. These downscaled copies are a modified version of those images, shared under the
same licence.
"""


def downscale(src: Path, dst: Path, longest: int, quality: int) -> None:
    """One photo: RGB, longest side at most `longest` (Lanczos), baseline JPEG, no metadata."""
    with Image.open(src) as image:
        image = image.convert("RGB")
        scale = longest / max(image.size)
        if scale < 1:
            size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
            image = image.resize(size, Image.Resampling.LANCZOS)
        image.save(dst, "JPEG", quality=quality, optimize=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=DEFAULT_SRC, help="folder holding images/")
    parser.add_argument("--dst", type=Path, default=DEFAULT_DST)
    parser.add_argument("--longest", type=int, default=256, help="longest side, pixels")
    parser.add_argument("--quality", type=int, default=85, help="JPEG quality")
    args = parser.parse_args(argv)
    photos = sorted((args.src / "images").glob("*.jpg"))
    if not photos:
        raise SystemExit(f"no .jpg files under {args.src / 'images'}; pass --src")
    images = args.dst / "images"
    if images.exists():
        shutil.rmtree(images)  # a rerun leaves exactly the current sample
    images.mkdir(parents=True)
    for photo in photos:
        downscale(photo, images / photo.name, args.longest, args.quality)
    text = README.format(n=len(photos), longest=args.longest, quality=args.quality)
    (args.dst / "README.md").write_text(text)
    total = sum(f.stat().st_size for f in images.iterdir())
    print(f"wrote {len(photos)} photos ({total / 1e6:.1f} MB) and README.md to {args.dst}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
