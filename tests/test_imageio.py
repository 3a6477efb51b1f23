import cv2
import numpy as np
import pytest

from dad_edge.errors import DataError
from dad_edge.data.imageio import (is_grayscale, list_images, read_image, read_mask, resize_mask,
                              write_image)


def _rgb(h=12, w=16):
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = 200  # R
    img[..., 1] = np.arange(w, dtype=np.uint8)[None, :] * 10  # G
    img[..., 2] = 30  # B
    return img


def test_list_images_filters_and_sorts(tmp_path):
    for name in ["b.jpg", "a.PNG", "c.txt", ".hidden.png", "d.TiFf"]:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "e.png").write_bytes(b"x")
    (tmp_path / "dir.png").mkdir()  # a folder with an image-like name is not a file
    assert [p.name for p in list_images(tmp_path)] == ["a.PNG", "b.jpg", "d.TiFf"]
    assert [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path, recursive=True)] == \
        ["a.PNG", "b.jpg", "d.TiFf", "sub/e.png"]


def test_list_images_missing_folder(tmp_path):
    with pytest.raises(DataError, match="nope"):
        list_images(tmp_path / "nope")


def test_rgb_roundtrip_and_order(tmp_path):
    img = _rgb()
    path = tmp_path / "deep" / "er" / "x.png"  # parents are created
    write_image(path, img)
    np.testing.assert_array_equal(read_image(path), img)
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert bgr[0, 0, 2] == 200 and bgr[0, 0, 0] == 30  # stored as a normal RGB file


def test_gray_file_gives_one_channel(tmp_path):
    gray = np.arange(64, dtype=np.uint8).reshape(8, 8) * 3
    write_image(tmp_path / "g.png", gray)
    out = read_image(tmp_path / "g.png")
    assert out.shape == (8, 8, 1) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[:, :, 0], gray)


def test_non_ascii_path(tmp_path):
    path = tmp_path / "données_画像" / "défaut.png"
    write_image(path, _rgb())
    np.testing.assert_array_equal(read_image(path), _rgb())


def test_16_bit_to_8_bit(tmp_path):
    img16 = np.array([[0, 257 * 100], [65535, 257 * 7]], np.uint16)
    ok, buf = cv2.imencode(".png", img16)
    assert ok
    (tmp_path / "d.png").write_bytes(buf.tobytes())
    out = read_image(tmp_path / "d.png")
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out[:, :, 0], [[0, 100], [255, 7]])


def test_truncated_jpeg_names_file(tmp_path):
    ok, buf = cv2.imencode(".jpg", np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    data = buf.tobytes()
    good = tmp_path / "good.jpg"
    good.write_bytes(data + b"trailing junk")  # data after the end marker is harmless
    assert read_image(good).shape == (64, 64, 3)
    bad = tmp_path / "cut.jpg"
    bad.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(DataError, match="cut.jpg.*truncated"):
        read_image(bad)


def test_truncated_png_names_file(tmp_path):
    ok, buf = cv2.imencode(".png", _rgb(40, 40))
    data = buf.tobytes()
    for name, cut in [("noiend.png", data[:-12]), ("half.png", data[: len(data) // 2])]:
        (tmp_path / name).write_bytes(cut)
        with pytest.raises(DataError, match=f"{name}.*truncated"):
            read_image(tmp_path / name)


def test_bad_files(tmp_path):
    (tmp_path / "text.png").write_text("not an image at all")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(DataError, match="text.png.*not a readable image"):
        read_image(tmp_path / "text.png")
    with pytest.raises(DataError, match="empty.png.*empty"):
        read_image(tmp_path / "empty.png")
    with pytest.raises(DataError, match="missing.png.*no such file"):
        read_image(tmp_path / "missing.png")


def test_read_mask_threshold_and_resize(tmp_path):
    m = np.array([[0, 127], [128, 255]], np.uint8)
    write_image(tmp_path / "m.png", m)
    np.testing.assert_array_equal(read_mask(tmp_path / "m.png"), [[False, False], [True, True]])
    big = resize_mask(read_mask(tmp_path / "m.png"), 4)
    assert big.dtype == bool and big.shape == (4, 4)
    np.testing.assert_array_equal(big, np.kron([[0, 0], [1, 1]], np.ones((2, 2))).astype(bool))


def test_is_grayscale():
    g = np.full((4, 4, 3), 9, np.uint8)
    assert is_grayscale(g) and is_grayscale(g[:, :, :1]) and is_grayscale(g[:, :, 0])
    g[1, 1, 2] = 10
    assert not is_grayscale(g)


def test_write_image_rejects_bad_input(tmp_path):
    with pytest.raises(DataError, match="f.png"):
        write_image(tmp_path / "f.png", np.zeros((4, 4), np.float32))
    with pytest.raises(DataError, match="extension"):
        write_image(tmp_path / "f.xyz", np.zeros((4, 4), np.uint8))
