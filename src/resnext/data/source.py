"""Where ImageNet-style samples come from: the ImageSource interface the loaders read, and what makes a sample bad."""

from __future__ import annotations

import io
from pathlib import PurePath
from typing import Protocol

from PIL import Image

from ..errors import DataError
from .imagenet_augment import image_size

VERIFY_HINT = "run `python -m resnext.data verify ROOT` to list every such file"


class ImageSource(Protocol):
    """One split of an image-classification data set: ``len(source)`` samples addressed by index
    0..len-1, each an encoded image (JPEG or PNG bytes) and an integer label.

    Both ImageNet backends (DALI's external source in dali.py, the torchvision Dataset in
    imagenet_torch.py) read samples through these members only, and the sharding plan (plan.py) works on
    indices, so a new storage format is one new class plus its detection in ``imagenet.open_sources``;
    the loaders do not change. The JPEG folder (imagenet_folder.FolderSource) is the first one.

    A packed format (tar shards in the WebDataset style, a record file with an offset index) implements:

    - ``classes``: class names in label order (label k is ``classes[k]``); train and val share it.
    - ``location``: where the split lives (a folder, a list file, a shard pattern), for messages about
      the split as a whole.
    - ``__len__``: the sample count, known without reading the samples (from an index stored beside the
      shards or built once when the source is opened).
    - ``read(index)``: (encoded image bytes, label) of one sample: a seek and a read. Index i must be the
      same sample every time (epoch orders, shards and augmentation are functions of indices), and the
      call must work in the training process and in DataLoader worker processes alike (open file
      handles lazily, per process). When the sample cannot be read, raise DataError naming it.
    - ``name(index)``: how messages name one sample, e.g. a path or ``train-00012.tar:n01440764/x.JPEG``;
      its suffix says what the bytes claim to be (``.png`` must hold PNG data, anything else JPEG).

    Opening a source (scanning, reading an index) is where a missing or malformed data set is refused,
    with a one-line DataError naming the file.
    """

    @property
    def classes(self) -> list[str]: ...  # class names; a label indexes this list

    @property
    def location(self) -> str: ...  # where the split lives, for messages

    def __len__(self) -> int: ...

    def read(self, index: int) -> tuple[bytes, int]: ...

    def name(self, index: int) -> str: ...


def content_problem(data: bytes, name: str) -> str | None:
    """Why the encoded image ``data`` is unusable for training (judged by its content; ``name``'s suffix
    says what it claims to be), or None."""
    try:
        head = bytes(data[:8])
        png = head.startswith(b"\x89PNG")
        suffix = PurePath(name).suffix
        if suffix.lower() == ".png":
            if not png:
                return "not a PNG file"
        elif png:
            return f"PNG data in a {suffix} file"
        elif not head.startswith(b"\xff\xd8"):
            return "not a JPEG file"
        image_size(data)  # more pixels than any decoder here takes: "too large an image", before decoding
        with Image.open(io.BytesIO(data)) as im:
            mode = im.mode
            im.draft("RGB", (max(1, im.width // 8), max(1, im.height // 8)))  # JPEG: decode at 1/8 scale
            im.load()  # still reads every entropy-coded block: truncation and broken streams raise
        if mode == "CMYK":
            return "CMYK JPEG (decoders expect RGB or grayscale)"
    except ValueError as e:  # image_size's: not an image, or too large a one
        return str(e)
    except Exception as e:  # any decoding failure is a finding, not a crash
        return f"not decodable ({type(e).__name__})"
    return None


def find_bad(source: ImageSource, indices) -> DataError | None:
    """A one-line DataError for the first of ``indices`` whose sample cannot be read or is not a usable
    image, or None when they are all fine."""
    for i in indices:
        try:
            data, _ = source.read(i)
        except DataError as e:
            return e
        why = content_problem(data, source.name(i))
        if why:
            return DataError(f"{source.name(i)}: {why}; {VERIFY_HINT}")
    return None
