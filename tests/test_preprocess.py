import pytest
import torch

from vidtag.models.preprocess import BGR_MEAN, BGR_STD, letterbox, normalise_and_pad, pixel_thumbnails, resize_for_input
from vidtag.ops.letterbox import plan_letterbox


@pytest.mark.parametrize(
    "width, height, imgsz",
    [(640, 272, 416), (272, 640, 416), (768, 576, 416), (100, 60, 320), (416, 416, 416), (1000, 999, 64)],
)
def test_letterbox_keeps_aspect_and_pads_to_multiple_of_32(width, height, imgsz):
    frames = torch.randint(0, 256, (2, height, width, 3), dtype=torch.uint8)
    x, box = letterbox(frames, imgsz)
    b, c, h, w = x.shape
    assert (b, c) == (2, 3) and x.dtype == torch.float32
    assert h % 32 == 0 and w % 32 == 0 and max(h, w) == imgsz
    assert box.input == (w, h) and box.source == (width, height)
    _, (resized_w, resized_h) = plan_letterbox((width, height), imgsz)
    assert max(resized_w, resized_h) == imgsz
    assert abs(resized_w / resized_h - width / height) < 2 / min(resized_w, resized_h)
    assert min(h, w) - min(resized_w, resized_h) < 32  # short side padded to the next multiple only
    # padding is the mean colour, i.e. 0 after normalisation
    if box.pad_y:
        assert torch.all(x[:, :, : box.pad_y] == 0)
    if box.pad_x:
        assert torch.all(x[:, :, :, : box.pad_x] == 0)


def test_letterbox_normalises_bgr():
    rgb = torch.tensor([10, 20, 30], dtype=torch.uint8)
    frames = rgb.expand(1, 64, 64, 3).contiguous()
    x, box = letterbox(frames, 64)
    assert box.scale == 1.0 and x.shape == (1, 3, 64, 64)
    expected = [(v - m) / s for v, m, s in zip((30, 20, 10), BGR_MEAN, BGR_STD)]
    torch.testing.assert_close(x[0, :, 5, 5], torch.tensor(expected))


def test_to_source_inverts_to_input():
    _, box = letterbox(torch.zeros(1, 272, 640, 3, dtype=torch.uint8), 416)
    boxes = torch.tensor([[0.0, 0.0, 640.0, 272.0], [10.5, 20.0, 30.0, 200.0]])
    torch.testing.assert_close(box.to_source(box.to_input(boxes)), boxes)
    # the frame's corners land on the image area's corners in the input
    corners = box.to_input(boxes[:1])[0]
    assert corners[0] == box.pad_x and corners[1] == box.pad_y
    assert abs(float(corners[2]) - 416) < 1e-4


def test_image_content_lands_where_to_input_says():
    frames = torch.zeros(1, 272, 640, 3, dtype=torch.uint8)
    frames[:, 100:172, 300:400] = 255  # a white block
    x, box = letterbox(frames, 416)
    white = (x[0, 0] > 0).nonzero()
    y1, x1 = white.min(0).values.tolist()
    y2, x2 = (white.max(0).values + 1).tolist()
    expected = box.to_input(torch.tensor([300.0, 100.0, 400.0, 172.0])).tolist()
    assert all(abs(a - b) <= 1.5 for a, b in zip((x1, y1, x2, y2), expected))


@pytest.mark.parametrize("imgsz", [0, -32, 100, 415, 416.0, "416"])
def test_bad_imgsz_raises(imgsz):
    with pytest.raises(ValueError, match="multiple of 32"):
        letterbox(torch.zeros(1, 10, 10, 3, dtype=torch.uint8), imgsz)


def test_bad_frames_raise():
    with pytest.raises(ValueError, match="uint8"):
        letterbox(torch.zeros(1, 10, 10, 3), 32)


@pytest.mark.parametrize("width, height, source_wh", [(640, 272, None), (90, 200, None), (416, 234, (1280, 720))])
def test_pixels_path_gives_letterbox_input_and_its_thumbnails(width, height, source_wh):
    """resize_for_input + normalise_and_pad is letterbox; pixel_thumbnails (from the pixels)
    equals the thumbnails of the normalised input that shots.push makes."""
    from vidtag.shots import frame_thumbnails

    frames = torch.randint(0, 256, (3, height, width, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(height))
    x, box = letterbox(frames, 416, source_wh)
    pixels, box2 = resize_for_input(frames, 416, source_wh)
    assert box2 == box and pixels.dtype == torch.uint8
    torch.testing.assert_close(normalise_and_pad(pixels, box), x, rtol=0, atol=0)
    torch.testing.assert_close(pixel_thumbnails(pixels), frame_thumbnails(x, box, 416), rtol=0, atol=1e-5)
