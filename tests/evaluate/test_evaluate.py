"""``magicanimate eval`` end to end (``evaluate()``, clip pairing, the report) and its command line."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from magicanimate_cli import media
from magicanimate_cli.cli import app
from magicanimate_cli.errors import UserError
from magicanimate_cli.evaluate import evaluate, pair_clips
from magicanimate_cli.evaluate import extractors as X
from magicanimate_cli.evaluate import frames as F

from evaluate_helpers import clip_set, write_clip
from factories import tiny_clip_net, tiny_frame_net

runner = CliRunner()


# ----------------------------------------------------------------------------- evaluate() end to end


def injected():
    def lpips_like(generated, truth):  # a stand-in scorer: mean absolute difference per frame
        return np.abs(generated.astype(float) - truth.astype(float)).mean(axis=(1, 2, 3))

    return {
        "fid": X.FrameExtractor(tiny_frame_net(), "tiny-frame-net", size=16),
        "fvd": X.ClipExtractor(tiny_clip_net(), "tiny-clip-net", size=12, scale=lambda x: x / 127.5 - 1),
        "fid-vid": X.ClipExtractor(tiny_clip_net(seed=1), "tiny-clip-net-2", size=12, scale=lambda x: x - 110),
        "lpips": _Scorer(lpips_like),
    }


class _Scorer:
    name = "stand-in lpips"

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, generated, truth):
        return self.fn(generated, truth)


def test_evaluate_end_to_end_with_injected_networks(tmp_path, rng):
    generated, truth = clip_set(tmp_path, rng, names=("a", "b", "c"), frames=8)
    result = evaluate(generated, truth, metrics="all", clip_length=4, batch_size=3, extractors=injected())
    data = result.to_dict()
    assert data["protocol"] == "corrected"
    assert [c["name"] for c in data["clips"]] == ["a", "b", "c"]
    assert set(data["overall"]) == {"l1", "psnr", "ssim", "ssim_gray", "lpips", "fid", "fid-vid", "fvd"}
    for scores in [data["overall"]] + [c["scores"] for c in data["clips"]]:
        for score in scores.values():
            assert {"value", "protocol", "clip_length", "extractor"} <= set(score)
            assert score["protocol"] == "corrected"
    assert data["overall"]["fvd"]["clip_length"] == 4 and data["overall"]["fvd"]["samples"] == 6  # 3 clips x 2
    assert data["overall"]["fvd"]["extractor"] == "tiny-clip-net"
    assert data["overall"]["fid"]["samples"] == 24 and data["overall"]["fid"]["extractor"] == "tiny-frame-net"
    assert data["overall"]["l1"]["clip_length"] == 8 and data["overall"]["l1"]["samples"] == 24
    # overall frame metrics are the mean over all frames; per clip over the clip's frames
    clip_l1 = [c["scores"]["l1"]["value"] for c in data["clips"]]
    assert data["overall"]["l1"]["value"] == pytest.approx(np.mean(clip_l1))
    json.dumps(data, allow_nan=False)

    # batch size does not move any number
    again = evaluate(generated, truth, metrics="all", clip_length=4, batch_size=1, extractors=injected()).to_dict()
    for key, score in data["overall"].items():
        rel = 1e-4 if key in ("fid", "fvd", "fid-vid") else 1e-9  # float32 networks: last-bit differences between batchings
        assert again["overall"][key]["value"] == pytest.approx(score["value"], rel=rel), key


def test_a_frechet_distance_of_ill_conditioned_covariances_is_noted_in_the_result(tmp_path, rng):
    # 12 frames of 64-d features on a large scale: the square root's imaginary part (0.5 on its diagonal) was dropped silently
    generated, truth = clip_set(tmp_path, rng)
    notes = {}
    for scale in (1.0, 100.0):
        pixels = X.FrameExtractor(lambda batch, scale=scale: batch.flatten(1)[:, :64] * scale, "pixels", size=16)
        notes[scale] = evaluate(generated, truth, metrics="fid", extractors={"fid": pixels}).to_dict()["notes"]  # what --json prints
    said = [note for note in notes[100.0] if "imaginary" in note]
    assert len(said) == 1 and said[0].startswith("fid: the matrix square root of the covariances' product has imaginary parts up to ")
    assert not any("imaginary" in note for note in notes[1.0])  # round-off at the features' own scale
    assert any("12 samples for 64-d features" in note for note in notes[1.0])


def test_disco_video_protocol_samples_whole_videos(tmp_path, rng):
    pytest.importorskip("cv2")
    generated, truth = clip_set(tmp_path, rng, names=("a", "b", "c"), frames=10)
    result = evaluate(generated, truth, metrics="l1,psnr,ssim,fvd,fid-vid", protocol="disco", clip_length=4, extractors=injected())
    overall = result.to_dict()["overall"]
    assert set(overall) == {"l1", "psnr", "ssim", "fvd", "fid-vid"}  # no ssim_gray: DisCo's SSIM is grayscale
    assert overall["fvd"]["samples"] == 3 and overall["fvd"]["clip_length"] == 10
    assert overall["fid-vid"]["samples"] == 3 and overall["fid-vid"]["clip_length"] == 4
    assert all(s["protocol"] == "disco" for s in overall.values())


def test_resize_and_length_mismatch_are_reported(tmp_path, rng):
    truth = rng.integers(0, 256, (5, 24, 32, 3), dtype=np.uint8)
    generated = rng.integers(0, 256, (4, 12, 16, 3), dtype=np.uint8)
    write_clip(tmp_path / "truth", truth)
    media.write_frames(tmp_path / "gen.mp4", generated)
    result = evaluate(tmp_path / "gen.mp4", tmp_path / "truth", metrics="l1,psnr")
    clip = result.clips[0]
    assert clip.frames == 4 and clip.frames_ground_truth == 5 and clip.resized_from == (12, 16)
    assert any("compared the first 4" in n for n in result.notes) and any("Pillow bicubic" in n for n in result.notes)
    cv2 = pytest.importorskip("cv2")
    disco = evaluate(tmp_path / "gen.mp4", tmp_path / "truth", metrics="l1", protocol="disco")
    assert any("OpenCV bilinear" in n for n in disco.notes)
    decoded = media.read_frames(tmp_path / "gen.mp4").array
    expected = np.mean([F.disco_l1(cv2.resize(g, (32, 24)), t) for g, t in zip(decoded, truth)])
    assert disco.clips[0].scores["l1"].value == pytest.approx(expected, rel=1e-12)


def test_videos_at_different_frame_rates_are_said_to_be_paired_by_index(tmp_path, rng):
    # the same 0.4 s at 12.5 and 25 fps: frame i of one is frame 2i of the other, and nothing said so
    truth = rng.integers(0, 256, (10, 24, 32, 3), dtype=np.uint8)
    media.write_frames(tmp_path / "gt.mp4", truth, fps=25)
    media.write_frames(tmp_path / "gen.mp4", truth[::2], fps=12.5)
    result = evaluate(tmp_path / "gen.mp4", tmp_path / "gt.mp4", metrics="l1")
    assert any("12.5 fps" in n and "25 fps" in n and "paired by index" in n for n in result.notes), result.notes
    media.write_frames(tmp_path / "same.mp4", truth, fps=25)
    write_clip(tmp_path / "frames", truth)  # a frames folder has no rate of its own: nothing to say
    for generated in (tmp_path / "same.mp4", tmp_path / "frames"):
        assert not any("fps" in n for n in evaluate(generated, tmp_path / "gt.mp4", metrics="l1").notes)


def test_an_identical_frame_pair_is_left_out_of_the_psnr_mean_not_made_its_value(tmp_path, rng):
    # one identical pair made the clip's and the overall PSNR infinite (JSON null), hiding the others
    truth = rng.integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
    generated = np.concatenate([truth[:1], rng.integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)])
    write_clip(tmp_path / "truth", truth)
    write_clip(tmp_path / "gen", generated)
    result = evaluate(tmp_path / "gen", tmp_path / "truth", metrics="l1,psnr")
    expected = np.mean([F.psnr(g, t) for g, t in zip(generated[1:], truth[1:])])
    for score in (result.clips[0].scores["psnr"], result.overall["psnr"]):
        assert score.value == pytest.approx(expected, rel=1e-12) and score.samples == 3
        assert score.to_dict()["note"].startswith("1 of 4 frame pairs are identical")
    write_clip(tmp_path / "copy", truth)
    alike = evaluate(tmp_path / "copy", tmp_path / "truth", metrics="psnr").overall["psnr"]
    assert alike.to_dict()["value"] is None and "infinite PSNR" in alike.to_dict()["note"]  # nothing else to average


def test_an_image_beside_the_clips_leaves_them_a_folder_of_clips(tmp_path, rng):
    # a reference.png beside the results made the folder one one-frame clip: scored against a
    # cover image of the other side, or refused as "one clip but a folder of clips"
    generated, truth = clip_set(tmp_path, rng, names=("a",), frames=2)
    media.write_png(generated / "reference.png", rng.integers(0, 256, (24, 20, 3), dtype=np.uint8), replace=False)
    media.write_png(truth / "cover.png", rng.integers(0, 256, (24, 20, 3), dtype=np.uint8), replace=False)
    assert [p[0] for p in pair_clips(generated, truth)] == ["a"]
    result = evaluate(generated, truth, metrics="l1")
    assert [c.name for c in result.clips] == ["a"] and result.clips[0].frames == 2
    assert f"{generated}: 1 image(s) beside its clips left out (reference.png)" in result.notes
    assert f"{truth}: 1 image(s) beside its clips left out (cover.png)" in result.notes


def test_inputs_are_paired_by_name_and_mismatches_are_one_line_errors(tmp_path, rng):
    generated, truth = clip_set(tmp_path, rng, names=("x", "y"), frames=2)
    assert [p[0] for p in pair_clips(generated, truth)] == ["x", "y"]
    write_clip(tmp_path / "gen" / "z", rng.integers(0, 256, (2, 24, 20, 3), dtype=np.uint8))
    with pytest.raises(UserError, match="no clip named z"):
        pair_clips(generated, truth)
    with pytest.raises(UserError, match="is one clip but"):
        pair_clips(generated / "x", truth)
    with pytest.raises(UserError, match="no such file"):
        pair_clips(tmp_path / "nope", truth)
    (tmp_path / "empty").mkdir()  # was "x: is one clip but empty is a folder of clips"
    with pytest.raises(UserError, match=r"empty: empty folder \(GENERATED\); give a clip"):
        pair_clips(tmp_path / "empty", truth / "x")
    # clip folders of the TikTok layout read their images/
    write_clip(tmp_path / "tiktok" / "images", rng.integers(0, 256, (2, 24, 20, 3), dtype=np.uint8))
    assert pair_clips(tmp_path / "tiktok", truth / "x")[0][1] == tmp_path / "tiktok" / "images"


# ----------------------------------------------------------------------------- CLI


def test_cli_prints_a_table_and_json(tmp_path, rng):
    generated, truth = clip_set(tmp_path, rng)
    result = runner.invoke(app, ["eval", str(generated), str(truth), "--metrics", "l1,psnr,ssim"])
    assert result.exit_code == 0, result.output
    assert "protocol corrected" in result.stdout and "SSIM gray" in result.stdout and "overall" in result.stdout
    for name in ("a", "b"):
        assert f"│ {name} " in result.stdout

    result = runner.invoke(app, ["eval", str(generated), str(truth), "--metrics", "psnr,l1", "--protocol", "disco", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["ok"] and data["protocol"] == "disco" and list(data["overall"]) == ["l1", "psnr"]
    assert data["overall"]["psnr"]["clip_length"] == 6 and "extractor" in data["overall"]["psnr"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--metrics", "l1,fancy"], "unknown fancy"),
        (["--protocol", "disc"], "choose corrected or disco"),
        (["--metrics", "fid-vid"], "fid-vid: "),
        (["--metrics", "fvd", "--no-download"], "fvd: "),
        (["--clip-length", "4", "--metrics", "fvd"], "at least 10 frames"),
        (["--metrics", "l1", "--device", "tpu"], "--device tpu: choose one of auto, cuda, cpu"),  # once ignored with pixel metrics
        (["--metrics", "l1", "--device", "cuda:999"], "--device cuda:999: "),  # no GPU here, or not a thousand
        (["--metrics", "l1", "--device", "cuda:\u00b2"], "choose one of auto, cuda, cpu"),  # "²".isdigit(), yet no number
    ],
)
def test_cli_bad_options_and_unavailable_metrics_exit_2_in_one_line(tmp_path, rng, args, message):
    generated, truth = clip_set(tmp_path, rng, frames=2)
    result = runner.invoke(app, ["eval", str(generated), str(truth), "--models", str(tmp_path / "models"), *args])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    if "--no-download" in args:
        assert "without --no-download" in lines[0] or "pip install" in lines[0]


def test_cli_bad_input_exits_2_with_json_error(tmp_path, rng):
    generated, truth = clip_set(tmp_path, rng, frames=2)
    result = runner.invoke(app, ["eval", str(generated / "a"), str(truth), "--json"])
    assert result.exit_code == 2
    data = json.loads(result.stdout)
    assert data["ok"] is False and "is one clip but" in data["error"] and data["exit_code"] == 2
    (tmp_path / "notes.txt").write_text("hi")
    result = runner.invoke(app, ["eval", str(tmp_path / "notes.txt"), str(truth / "a")])
    assert result.exit_code == 2 and "not a video" in result.stderr


@pytest.mark.parametrize("protocol", ["corrected", "disco"])
def test_frames_smaller_than_the_ssim_window_are_refused_unless_ssim_is_left_out(tmp_path, rng, protocol):
    generated, truth = clip_set(tmp_path, rng, names=("a", "thin"), frames=2, size=(200, 6))  # 6 wide: was a ValueError, exit 1
    result = runner.invoke(app, ["eval", str(generated), str(truth), "--metrics", "l1,ssim", "--protocol", protocol, "--json"])
    assert result.exit_code == 2, result.output
    assert json.loads(result.stdout)["error"].endswith("frames of 6x200 are smaller than SSIM's 7x7 window; leave ssim out of --metrics")
    result = runner.invoke(app, ["eval", str(generated), str(truth), "--metrics", "l1,psnr", "--protocol", protocol, "--json"])
    assert result.exit_code == 0, result.output


def test_animate_grid_outputs_beside_results_are_not_clips(tmp_path):
    from magicanimate_cli.evaluate import pair_clips

    gen, gt = tmp_path / "gen", tmp_path / "gt"
    for folder in (gen, gt):
        folder.mkdir()
        media.write_frames(folder / "clip.mp4", np.zeros((2, 16, 16, 3), np.uint8))
    media.write_frames(gen / "clip_grid.mp4", np.zeros((2, 16, 48, 3), np.uint8))
    assert [name for name, _, _ in pair_clips(gen, gt)] == ["clip"]


def test_a_clip_folder_in_a_folder_of_clips_reads_its_images_whatever_lies_beside_them(tmp_path, rng):
    # a TikTok-style clip folder with a thumbnail beside images/ was, in a folder of clips, a
    # one-frame clip (the thumbnail), while the same folder given alone read its images/
    generated, truth = clip_set(tmp_path, rng, names=("a",), frames=3)
    clip = tmp_path / "gt_clips" / "a"
    (truth / "a").rename(tmp_path / "frames")
    write_clip(clip / "images", media.read_frames(tmp_path / "frames").array)
    media.write_png(clip / "thumb.png", rng.integers(0, 256, (24, 20, 3), dtype=np.uint8), replace=False)
    assert pair_clips(generated, clip.parent) == [("a", generated / "a", clip / "images")]
    assert pair_clips(generated / "a", clip)[0][2] == clip / "images"
    result = evaluate(generated, clip.parent, metrics="l1")
    assert result.clips[0].frames == 3 and not result.notes


def test_the_same_clip_on_both_sides_is_refused(tmp_path, rng):
    # `eval out out` (or a link to the ground truth) scored a clip against itself: L1 0, SSIM 1
    generated, truth = clip_set(tmp_path, rng, names=("a", "b"), frames=2)
    (tmp_path / "link").symlink_to(truth)
    for g, t in ((truth, truth), (tmp_path / "link", truth), (truth / "a", truth / "a")):
        result = runner.invoke(app, ["eval", str(g), str(t), "--metrics", "l1"])
        assert result.exit_code == 2, result.output
        assert result.stderr.strip().endswith("; pass the generated clips, then the ground truth"), result.stderr
        assert "is both the generated clip and the ground truth" in result.stderr


def test_an_animate_grid_output_given_as_the_animation_is_refused(tmp_path, rng):
    # the three panels were squeezed into the ground truth's frame and scored, with a resize note only
    truth = rng.integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    media.write_frames(tmp_path / "gt.mp4", truth)
    media.write_frames(tmp_path / "clip_grid.mp4", np.concatenate([truth, truth, truth], axis=2))
    with pytest.raises(UserError, match=r"clip_grid.mp4: 48x16 frames of an `animate --grid` output .* pass .*clip.mp4 instead$"):
        evaluate(tmp_path / "clip_grid.mp4", tmp_path / "gt.mp4", metrics="l1")
    write_clip(tmp_path / "gen" / "clip_grid", np.concatenate([truth, truth, truth], axis=2))
    write_clip(tmp_path / "gts" / "clip_grid", truth)
    with pytest.raises(UserError, match=r"pass .*gen/clip instead$"):
        evaluate(tmp_path / "gen", tmp_path / "gts", metrics="l1")
    # a clip that is named so but has the ground truth's shape is scored
    media.write_frames(tmp_path / "alike_grid.mp4", truth)
    assert evaluate(tmp_path / "alike_grid.mp4", tmp_path / "gt.mp4", metrics="l1").clips[0].frames == 3


def test_a_clip_folder_at_another_rate_than_the_video_is_said_to_be_paired_by_index(tmp_path, rng):
    # a clip folder's meta.json records its rate (preprocess): a 30 fps clip against a 25 fps video was paired silently
    from magicanimate_cli.clip import write_meta

    truth = rng.integers(0, 256, (6, 24, 32, 3), dtype=np.uint8)
    write_clip(tmp_path / "clip" / "images", truth)
    write_meta(tmp_path / "clip", {"fps": 30})
    media.write_frames(tmp_path / "gen.mp4", truth, fps=25)
    result = evaluate(tmp_path / "gen.mp4", tmp_path / "clip", metrics="l1")
    assert any("generated is 25 fps, ground truth 30 fps" in n and "paired by index" in n for n in result.notes), result.notes
    write_meta(tmp_path / "clip", {"fps": 25})
    assert not evaluate(tmp_path / "gen.mp4", tmp_path / "clip", metrics="l1").notes


def test_grayscale_or_transparent_frames_are_said_to_be_read_so(tmp_path, rng):
    # a grayscale ground truth was scored against colour animations, and a transparent one over white, silently
    from PIL import Image

    generated, truth = clip_set(tmp_path, rng, names=("a",), frames=2)
    for mode in ("L", "I;16", "RGBA"):
        folder = tmp_path / mode.replace(";", "")
        folder.mkdir()
        for file in sorted((truth / "a").iterdir()):
            image = Image.open(file)
            if mode == "RGBA":
                image.putalpha(128)
            else:
                image = image.convert("L")
                image = Image.fromarray(np.asarray(image).astype(np.uint16) * 257) if mode == "I;16" else image
            image.save(folder / file.name)
        assert Image.open(folder / "00000.png").mode == mode
        notes = evaluate(generated / "a", folder, metrics="l1").notes
        if mode == "RGBA":
            assert notes == ["a: the ground truth frames have transparency: scored as shown, over white "
                             "(DisCo's cv2.imread dropped the alpha and kept the colours under it)"]
        else:
            assert notes == ["a: the ground truth frames are grayscale (00000.png) and the generated ones in colour: "
                             "every metric counts the colour as error; give both in colour, or both in gray"]
    assert not evaluate(tmp_path / "I16", tmp_path / "L", metrics="l1").notes  # gray against gray: nothing to say
    assert not evaluate(generated / "a", truth / "a", metrics="l1").notes


def test_a_value_that_is_not_a_number_is_not_explained_as_identical_frames():
    # only an infinite PSNR comes from identical frames; a NaN (a Fréchet distance gone wrong) does not
    from magicanimate_cli.evaluate import Score

    infinite = Score(float("inf"), "corrected", "PSNR", None, None, 3).to_dict()
    assert infinite["value"] is None and "identical frames" in infinite["note"]
    nan = Score(float("nan"), "corrected", "Fréchet distance", "i3d", 16, 3).to_dict()
    assert nan["value"] is None and nan["note"] == "value is nan"
