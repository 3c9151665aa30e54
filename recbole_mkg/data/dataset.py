"""Datasets: RecBole's ``KnowledgeBasedDataset`` plus per-entity multimodal features and masks.

:class:`MultimodalKGDataset` loads, after RecBole has read and remapped the ``.inter/.kg/.link`` files,
one feature file per modality the model uses (config ``feature_files`` picks the file, ``modalities``
the model's modalities) and aligns the rows to RecBole's internal entity ids:

* ``dataset.modal_features[m]``: ``torch.FloatTensor`` [entity_num, D_m] (zeros where missing);
* ``dataset.modal_masks[m]``: ``torch.BoolTensor`` [entity_num], ``True`` where the entity has a row;
* ``dataset.modal_info[m]``: file, dimension, coverage of items and entities, encoder metadata.

Rows whose id is not an entity of the (filtered) KG/link are reported and dropped
(``strict_features: True`` makes that an error).

:class:`KGFilteredDataset` is the plain ``Dataset`` used for non-KG models on a KG dataset: it drops
interactions on items that are not linked to the KG, exactly as ``KnowledgeBasedDataset`` does, so that
every model of a comparison trains and is tested on the same interactions and the same split.
"""
import os

import numpy as np
import torch
from recbole.data.dataset import Dataset, KnowledgeBasedDataset
from recbole.utils import set_color

from recbole_mkg.data.features import FeatureFileError, align_features, load_feature_file

MODALITIES = ("visual", "text")


def requested_modalities(config):
    """Modalities the model asks for (config ``modalities``), validated."""
    modalities = config["modalities"]
    if modalities is None:
        return []
    if isinstance(modalities, str):  # CLI: --modalities="[text]" stays a string (RecBole cannot eval it)
        text = modalities.strip().strip("[]")
        modalities = [m.strip().strip("'\"") for m in text.split(",") if m.strip()]
        modalities = [] if modalities == ["none"] else modalities
    modalities = list(modalities)
    unknown = [m for m in modalities if m not in MODALITIES]
    if unknown:
        raise ValueError(
            f"config 'modalities': unknown modality {unknown}; use a list of {list(MODALITIES)} "
            f"(e.g. modalities: [visual, text], or [] for none)"
        )
    return modalities


def relations_to_drop(config):
    """The relation tokens of config ``drop_relations`` as a list (a single token allowed)."""
    drop = config["drop_relations"] or []
    if isinstance(drop, str):
        drop = [drop]
    return list(drop)


def permute_tails_within_relations(relations, tails, seed):
    """The KG4RecEval control: tails shuffled among the triples of the same relation. Heads, relations,
    each relation's multiset of tails and every entity's degree as a tail are kept; which head links to
    which tail becomes random. relations, tails: arrays [T] -> permuted tails [T]."""
    relations, tails = np.asarray(relations), np.asarray(tails)
    rng = np.random.default_rng(seed)
    grouped = np.argsort(relations, kind="stable")  # positions, grouped by relation
    shuffled = np.lexsort((rng.random(len(relations)), relations))  # same groups, random order inside
    out = tails.copy()
    out[grouped] = tails[shuffled]
    return out


class KGDataset(KnowledgeBasedDataset):
    """RecBole's ``KnowledgeBasedDataset`` plus two KG edits made when the KG is loaded (before RecBole's
    own filtering, and also for benchmark files, whose filtering RecBole skips):

    * ``drop_relations``: KG triples of the listed relations (tokens as in the ``.kg`` file, e.g.
      DBpedia's generic ``dbo:wikiPageWikiLink``) are removed, so the entities they alone reached and the
      items linked only through them disappear too;
    * ``kg_permute_tails`` (a control, default off): tails permuted within each relation
      (:func:`permute_tails_within_relations`, seeded by ``kg_permute_seed``), the "does the KG really
      matter" check of KG4RecEval: a model whose accuracy does not drop does not use the KG's facts.

    Used for every knowledge-aware model, the plugin's and RecBole's."""

    def _load_data(self, token, dataset_path):
        # The edits happen at load time, not in _data_filtering: RecBole skips _data_filtering for
        # benchmark files (the side-by-side runner's saved split), and the control must apply there too.
        super()._load_data(token, dataset_path)
        drop = relations_to_drop(self.config)
        if drop:
            relations = self.kg_feat[self.relation_field]
            unknown = sorted(set(drop) - set(relations.unique()))
            if unknown and self.config["benchmark_filename"]:  # e.g. the runner's saved split: removed there
                self.logger.info(f"drop_relations: {unknown} already absent from this split's {self.dataset_name}.kg")
            elif unknown:
                self.logger.warning(f"drop_relations: {unknown} do not occur in {self.dataset_name}.kg")
            keep = ~relations.isin(drop)
            self.logger.info(set_color("drop_relations", "blue") + f": dropped {int((~keep).sum())} triples of {drop}")
            self.kg_feat = self.kg_feat[keep.to_numpy()].reset_index(drop=True)
        if self.config["kg_permute_tails"]:
            seed = self.config["kg_permute_seed"]
            self.kg_feat[self.tail_entity_field] = permute_tails_within_relations(
                self.kg_feat[self.relation_field].to_numpy(), self.kg_feat[self.tail_entity_field].to_numpy(),
                0 if seed is None else int(seed))
            self.logger.info(set_color("kg_permute_tails", "blue") + ": KG tails permuted within each relation "
                             "(control run: the KG's facts are destroyed)")


class MultimodalKGDataset(KGDataset):
    """``KGDataset`` + aligned per-entity feature matrices and presence masks."""

    def __init__(self, config):
        super().__init__(config)
        self._load_modal_features()

    def _feature_path(self, modality):
        files = self.config["feature_files"] or {}
        suffix = files.get(modality)
        if not suffix:
            raise FeatureFileError(
                f"config 'feature_files' has no file for modality {modality!r} that the model uses; "
                f"set feature_files: {{{modality}: <suffix>}} or drop it from 'modalities'"
            )
        folder = self.config["feature_dir"] or self.dataset_path
        return os.path.join(folder, f"{self.dataset_name}.{suffix}")

    def _load_modal_features(self):
        self.modal_features, self.modal_masks, self.modal_info = {}, {}, {}
        entity_token2id = self.field2token_id[self.entity_field]
        item_token2id = self.field2token_id[self.iid_field]
        for modality in requested_modalities(self.config):
            path = self._feature_path(modality)
            if not os.path.isfile(path):
                raise FeatureFileError(
                    f"{path}: feature file for modality {modality!r} not found (config feature_files.{modality}"
                    f" = {self.config['feature_files'].get(modality)!r}). Extract it with "
                    f"`python -m dataset_tools extract-features`, point feature_files at an existing file, "
                    f"or run without it: --modalities=\"[]\" or a list without {modality!r}."
                )
            table = load_feature_file(path, cache_dir=self.config["feature_cache_dir"])
            token2id = entity_token2id if table.id_field == "entity_id" else item_token2id
            matrix, mask, unknown = align_features(table, token2id, self.entity_num)
            if mask.sum() == 0:
                raise FeatureFileError(
                    f"{path}: none of its {len(table.ids)} ids is a {table.id_field} of dataset "
                    f"{self.dataset_name!r} (e.g. {table.ids[:3].tolist()}); the file belongs to another "
                    f"dataset or uses other ids than the .kg/.link files"
                )
            if len(unknown):
                message = (
                    f"{path}: {len(unknown)} of {len(table.ids)} rows have an id that is not in the filtered "
                    f"KG/link (e.g. {unknown[:3].tolist()}); they are dropped"
                )
                if self.config["strict_features"]:
                    raise FeatureFileError(message + " (strict_features: True)")
                self.logger.warning(message)
            item_mask = mask[: self.item_num]
            self.modal_features[modality] = torch.from_numpy(matrix)
            self.modal_masks[modality] = torch.from_numpy(mask)
            self.modal_info[modality] = {
                "file": path,
                "dim": table.dim,
                "rows": int(len(table.ids)),
                "dropped_rows": int(len(unknown)),
                "entity_coverage": float(mask[1:].mean()),
                "item_coverage": float(item_mask[1:].mean()),
                "meta": table.meta,
            }
            self.logger.info(
                set_color(f"{modality} features", "blue")
                + f": {path} dim={table.dim}, items covered {item_mask[1:].mean():.1%}, "
                f"entities covered {mask[1:].mean():.1%}"
            )

    def __str__(self):
        lines = [super().__str__()]
        for modality, info in getattr(self, "modal_info", {}).items():
            lines.append(
                f"{modality} features: dim {info['dim']}, items {info['item_coverage']:.1%}, "
                f"entities {info['entity_coverage']:.1%} ({os.path.basename(info['file'])})"
            )
        return "\n".join(lines)


class KGFilteredDataset(Dataset):
    """Plain ``Dataset`` restricted to items linked to the KG (same interactions as the KG models,
    ``drop_relations`` included)."""

    def _data_filtering(self):
        super()._data_filtering()
        link_path = os.path.join(self.dataset_path, f"{self.dataset_name}.link")
        kg_path = os.path.join(self.dataset_path, f"{self.dataset_name}.kg")
        link = read_atomic_table(link_path)
        kg = read_atomic_table(kg_path)
        head, tail = self.config["HEAD_ENTITY_ID_FIELD"], self.config["TAIL_ENTITY_ID_FIELD"]
        kg = kg[~kg[self.config["RELATION_ID_FIELD"]].isin(relations_to_drop(self.config))]
        entities = set(kg[head].values) | set(kg[tail].values)
        linked = link[link[self.config["ENTITY_ID_FIELD"]].isin(entities)][self.iid_field].values
        keep = self.inter_feat[self.iid_field].isin(set(linked))
        dropped = int((~keep).sum())
        self.inter_feat.drop(self.inter_feat.index[~keep], inplace=True)
        self.logger.info(
            set_color("kg_filter_interactions", "blue")
            + f": dropped {dropped} interactions on items not linked to the KG"
        )


def read_atomic_table(path):
    """Read an atomic file as strings, columns named without their ``:type``."""
    import pandas as pd

    df = pd.read_csv(path, sep="\t", dtype=str, quoting=3, keep_default_na=False, engine="c")
    df.columns = [c.split(":")[0] for c in df.columns]
    return df


def kg_file_names(dataset_name):
    """The KG atomic files a knowledge-aware model reads: ``[<name>.kg, <name>.link]``."""
    return [f"{dataset_name}.kg", f"{dataset_name}.link"]


def has_kg_files(config):
    return all(os.path.isfile(os.path.join(config["data_path"], f)) for f in kg_file_names(config["dataset"]))
