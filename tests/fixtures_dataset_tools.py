"""Tiny raw inputs for the dataset_tools tests, written into a temporary folder (no real data).

``write_movielens(root)`` -> dict of paths: an ML-100K-style ``u.data``/``u.item`` (latin-1)/``u.user``, an
item map to "ML-20M" ids, a headerless KB4Rec-style link, a RecBole ``.kg`` (with a generic relation to drop
and a duplicated triple), an item-text table with missing rows and a flagged item, entity names, and a
poster folder with PNG/JPEG images, a corrupt image and a table row pointing at a missing file.
``write_tiny_clip(root)`` -> (model name, config path, checkpoint path) of a random-weight open_clip model.
"""
import json
import os

import numpy as np

# item 1..6; ML-20M ids 101..106 (item 6 duplicates item 5's film -> same ML-20M id)
ITEMS = [
    ("1", "Toy Story (1995)", "01-Jan-1995", [3, 4, 5]),
    ("2", "GoldenEye (1995)", "01-Jan-1995", [1, 2, 16]),
    ("3", "Misérables, Les (1995)", "01-Jan-1995", [8, 12]),
    ("4", "Unlinked Film (1996)", "01-Jan-1996", [8]),
    ("5", "Chasing Amy (1997)", "01-Jan-1997", [5, 8]),
    ("6", "Chasing Amy (1997)", "01-Jan-1997", [5, 8]),
]


def _write(path, text, encoding="utf-8"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding=encoding, newline="\n") as f:
        f.write(text)
    return path


def write_movielens(root):
    p = {}
    raw = os.path.join(root, "raw")
    lines = []
    t = 880000000
    for u in range(1, 9):
        for i in range(1, 7):
            if (u + i) % 4 == 0 and u > 1:
                continue
            t += 17
            lines.append(f"{u}\t{i}\t{1 + (u * i) % 5}\t{t}")
    lines.append("9\t1\t5\t881000000")  # a user with one interaction (k-core fodder)
    p["u.data"] = _write(os.path.join(raw, "u.data"), "\n".join(lines) + "\n")
    rows = []
    for iid, title, date, genres in ITEMS:
        flags = ["1" if g in genres else "0" for g in range(19)]
        rows.append("|".join([iid, title, date, "", "http://x"] + flags))
    p["u.item"] = _write(os.path.join(raw, "u.item"), "\n".join(rows) + "\n", encoding="latin-1")
    p["u.user"] = _write(os.path.join(raw, "u.user"),
                         "".join(f"{u}|{20 + u}|{'MF'[u % 2]}|writer|0000{u}\n" for u in range(1, 10)))
    p["map"] = _write(os.path.join(raw, "map.tsv"), "item_id\tml20m_movie_id\tmethod\n"
                      "1\t101\ttitle\n2\t102\ttitle\n3\t103\timdb\n4\t104\ttitle\n5\t105\ttitle\n6\t105\ttitle\n")
    # 104 -> an entity without triples; 999 -> not in the dataset
    p["ml2fb"] = _write(os.path.join(raw, "ml2fb.txt"),
                        "101\tm.toy\n102\tm.golden\n103\tm.miser\n104\tm.notriple\n105\tm.amy\n999\tm.other\n")
    kg = ["head_id:token\trelation_id:token\ttail_id:token",
          "m.toy\tfilm.genre\tm.animation", "m.toy\tfilm.actor\tm.hanks", "m.golden\tfilm.actor\tm.brosnan",
          "m.golden\tfilm.genre\tm.action", "m.miser\tfilm.genre\tm.drama", "m.amy\tfilm.genre\tm.drama",
          "m.amy\tfilm.actor\tm.affleck", "m.toy\twikiPageWikiLink\tm.golden", "m.miser\twikiPageWikiLink\tm.amy",
          "m.toy\tfilm.genre\tm.animation"]  # last one duplicated
    p["kg"] = _write(os.path.join(raw, "films.kg"), "\n".join(kg) + "\n")
    # item texts: item 4 missing, item 6 empty, item 2 flagged (wrong match)
    p["item_text"] = _write(os.path.join(raw, "item_text.tsv"),
                            "item_id\tml_title\toverview\ttmdb_match_flags\n"
                            "1\tToy Story\tToys come alive when nobody watches.\t\n"
                            "2\tGoldenEye\tA totally different film's plot.\timdb_mismatch;year_diff\n"
                            "3\tMisérables\tA convict seeks redemption in France.\ttitle_no_overlap\n"
                            "5\tChasing Amy\tA comic artist falls in love.\t\n"
                            "6\tChasing Amy\t\t\n")
    p["ent_text"] = _write(os.path.join(raw, "ent_text.tsv"),
                           "entity_id\ttext\tsource\n"
                           "m.toy\tToy Story\tx\nm.hanks\tTom Hanks\tx\nm.brosnan\tPierce Brosnan\tx\n"
                           "m.drama\tDrama\tx\nm.unused\tNot in the KG\tx\nm.affleck\t\tx\n")
    p["posters"] = write_images(os.path.join(raw, "posters"))
    p["image_table"] = _write(os.path.join(raw, "image.tsv"),
                              "item_id\tpath\ttmdb_match_flags\n"
                              "1\tposters/1.png\t\n2\tposters/2.jpg\timdb_mismatch\n3\tposters/3.jpg\t\n"
                              "4\tposters/4.png\t\n5\tposters/5.jpg\t\n6\tposters/6.jpg\t\n")
    return p


def write_images(folder):
    """1.png, 2.jpg, 3.jpg, 4.png valid (different colours/textures); 5.jpg corrupt; 6.jpg absent."""
    from PIL import Image

    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(1)
    arr = np.zeros((60, 40, 3), dtype=np.uint8)
    arr[..., 0] = 200
    Image.fromarray(arr).save(os.path.join(folder, "1.png"))
    Image.fromarray(rng.integers(0, 255, (138, 92, 3), dtype=np.uint8)).save(os.path.join(folder, "2.jpg"), quality=80)
    stripes = np.zeros((138, 92, 3), dtype=np.uint8)
    stripes[::4] = 255
    Image.fromarray(stripes).save(os.path.join(folder, "3.jpg"))
    Image.fromarray(np.full((50, 50), 90, dtype=np.uint8), mode="L").save(os.path.join(folder, "4.png"))
    with open(os.path.join(folder, "5.jpg"), "wb") as f:
        f.write(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    return folder


def write_feature(path, rows, header="entity_id:token\tfeature:float_seq"):
    return _write(path, header + "\n" + "".join(f"{k}\t{v}\n" for k, v in rows))


TINY_CLIP = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def write_tiny_clip(root, name="mkg-tiny-clip"):
    """A tiny open_clip architecture with random weights, saved like a downloaded checkpoint."""
    import open_clip
    import torch

    os.makedirs(root, exist_ok=True)
    cfg = os.path.join(root, f"{name}.json")
    with open(cfg, "w") as f:
        json.dump(TINY_CLIP, f)
    open_clip.add_model_config(cfg)
    torch.manual_seed(0)
    model = open_clip.create_model(name)
    ckpt = os.path.join(root, f"{name}.pt")
    torch.save({"state_dict": model.state_dict()}, ckpt)
    return name, cfg, ckpt
