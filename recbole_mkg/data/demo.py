"""``mkg-demo``: the embedded default dataset, generated deterministically on first use.

Written in exactly the format of a real dataset (atomic ``.inter/.kg/.link/.item`` files plus
``visual.feat``/``text.feat`` feature files), small enough to train Multi-KG4Rec in a couple of minutes
on 2 CPU cores, with planted structure so that it demonstrates something true:

* every item has a latent **visual style** (one of ``n_styles``) and a latent **text topic**
  (one of ``n_topics``), drawn independently; its visual feature is its style's centroid plus noise,
  its text feature its topic's centroid plus noise (different dimensions: 64 and 48);
* half the users choose items by visual style (each likes 2 styles), half by text topic (2 topics);
  a user's interactions are drawn with probability proportional to ``popularity * exp(beta * liked)``;
* the KG carries item attributes that are only *partly* informative: ``film.genre`` equals the item's
  topic with probability ``attr_fidelity``, ``film.director`` directors each favour one style,
  ``film.year`` is noise, ``director.country`` adds a second hop; genre entities have text features
  (their topic's centroid + noise), directors, years and countries have none (masked);
* some items lack a modality (``missing_image``, ``missing_text``): their mask bit is 0;
* the catalogue is long-tailed (``n_items`` > interactions per item), so IDs alone see few interactions
  per item while the features carry the preference-relevant factor.
"""
import json
import os

import numpy as np

from recbole_mkg.atomic_io import atomic_open, atomic_write_json
from recbole_mkg.data.features import write_feature_file

DEMO_NAME = "mkg-demo"
DEMO_VERSION = 3
DEFAULTS = dict(
    seed=7, n_users=500, n_items=1000, n_styles=8, n_topics=8, n_directors=50, n_years=10, n_countries=6,
    inter_per_user=(5, 15), beta=4.0, attr_fidelity=0.5, director_fidelity=0.5,
    visual_dim=64, text_dim=48, feature_noise=0.5, missing_image=0.15, missing_text=0.10,
)


def _unit_rows(rng, n, dim):
    x = rng.normal(size=(n, dim))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _write_tsv(path, header, rows):
    with atomic_open(path) as f:
        f.write("\t".join(header) + "\n")
        for row in rows:
            f.write("\t".join(str(v) for v in row) + "\n")


def generate(folder, name=DEMO_NAME, **overrides):
    """Write the demo dataset into ``folder`` as ``<folder>/<name>.*`` (tests use small ``overrides``);
    returns a summary dict."""
    p = dict(DEFAULTS, **overrides)
    rng = np.random.default_rng(p["seed"])
    os.makedirs(folder, exist_ok=True)
    n_items, n_users = p["n_items"], p["n_users"]

    style = rng.integers(p["n_styles"], size=n_items)
    topic = rng.integers(p["n_topics"], size=n_items)
    popularity = rng.pareto(1.5, size=n_items) + 1.0

    # users: half visual-driven, half text-driven, each liking two factors
    visual_user = np.arange(n_users) < n_users // 2
    liked = np.stack([rng.choice(p["n_styles"] if v else p["n_topics"], size=2, replace=False) for v in visual_user])
    factor = np.where(visual_user[:, None], style[None, :], topic[None, :])  # [U, I]
    likes = (factor == liked[:, :1]) | (factor == liked[:, 1:])
    weight = popularity[None, :] * np.exp(p["beta"] * likes)
    weight /= weight.sum(axis=1, keepdims=True)
    lo, hi = p["inter_per_user"]
    counts = rng.integers(lo, hi + 1, size=n_users)
    inter_rows, t = [], 0
    for u in range(n_users):  # generation only, ~600 users: a loop is clearer than a vectorised sampler
        items = rng.choice(n_items, size=counts[u], replace=False, p=weight[u])
        for i in items:
            t += int(rng.integers(1, 100))
            inter_rows.append((f"u{u}", f"i{i}", int(rng.integers(4, 6)), t))
    _write_tsv(os.path.join(folder, f"{name}.inter"),
               ["user_id:token", "item_id:token", "rating:float", "timestamp:float"], inter_rows)

    # KG: genre (partly = topic), director (favours a style), year (noise), director -> country
    genre = np.where(rng.random(n_items) < p["attr_fidelity"], topic, rng.integers(p["n_topics"], size=n_items))
    director_style = rng.integers(p["n_styles"], size=p["n_directors"])
    by_style = [np.flatnonzero(director_style == s) for s in range(p["n_styles"])]
    director = np.array([
        rng.choice(by_style[s]) if (len(by_style[s]) and rng.random() < p["director_fidelity"])
        else rng.integers(p["n_directors"]) for s in style
    ])
    year = rng.integers(p["n_years"], size=n_items)
    country = rng.integers(p["n_countries"], size=p["n_directors"])
    kg_rows = []
    for i in range(n_items):
        kg_rows += [(f"e_i{i}", "film.genre", f"e_genre{genre[i]}"),
                    (f"e_i{i}", "film.director", f"e_dir{director[i]}"),
                    (f"e_i{i}", "film.year", f"e_year{year[i]}")]
    kg_rows += [(f"e_dir{d}", "director.country", f"e_country{country[d]}") for d in range(p["n_directors"])]
    _write_tsv(os.path.join(folder, f"{name}.kg"), ["head_id:token", "relation_id:token", "tail_id:token"], kg_rows)
    _write_tsv(os.path.join(folder, f"{name}.link"), ["item_id:token", "entity_id:token"],
               [(f"i{i}", f"e_i{i}") for i in range(n_items)])
    _write_tsv(os.path.join(folder, f"{name}.item"), ["item_id:token", "style:token", "topic:token"],
               [(f"i{i}", int(style[i]), int(topic[i])) for i in range(n_items)])

    # features: centroid + noise; some items miss a modality; genres have text features
    noise = p["feature_noise"]
    v_centroid = _unit_rows(rng, p["n_styles"], p["visual_dim"])
    t_centroid = _unit_rows(rng, p["n_topics"], p["text_dim"])
    visual = v_centroid[style] + noise * rng.normal(size=(n_items, p["visual_dim"])) / np.sqrt(p["visual_dim"])
    text = t_centroid[topic] + noise * rng.normal(size=(n_items, p["text_dim"])) / np.sqrt(p["text_dim"])
    has_image = rng.random(n_items) >= p["missing_image"]
    has_text = rng.random(n_items) >= p["missing_text"]
    genre_text = t_centroid + noise * rng.normal(size=t_centroid.shape) / np.sqrt(p["text_dim"])
    meta = {"generator": "recbole_mkg.data.demo", "version": DEMO_VERSION, "params": p}
    write_feature_file(os.path.join(folder, f"{name}.visual.feat"),
                       [f"e_i{i}" for i in np.flatnonzero(has_image)], visual[has_image],
                       meta=dict(meta, modality="visual", encoder="synthetic style centroids"))
    text_ids = [f"e_i{i}" for i in np.flatnonzero(has_text)] + [f"e_genre{g}" for g in range(p["n_topics"])]
    write_feature_file(os.path.join(folder, f"{name}.text.feat"), text_ids,
                       np.concatenate([text[has_text], genre_text]),
                       meta=dict(meta, modality="text", encoder="synthetic topic centroids"))
    summary = {
        "version": DEMO_VERSION, "users": n_users, "items": n_items, "interactions": len(inter_rows),
        "triples": len(kg_rows), "items_with_image": int(has_image.sum()), "items_with_text": int(has_text.sum()),
        "params": p,
    }
    atomic_write_json(os.path.join(folder, f"{name}.version.json"), summary)
    return summary


def ensure_demo(data_root):
    """Generate ``<data_root>/mkg-demo`` unless an up-to-date copy exists; returns its folder."""
    folder = os.path.join(data_root, DEMO_NAME)
    stamp = os.path.join(folder, f"{DEMO_NAME}.version.json")
    if os.path.isfile(stamp):
        with open(stamp, encoding="utf-8") as f:
            if json.load(f).get("version") == DEMO_VERSION:
                return folder
    generate(folder)
    return folder
