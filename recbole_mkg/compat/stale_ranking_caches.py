"""Loading a checkpoint leaves the full-ranking caches of the weights before it (KGIN, MCCLK).

RecBole's graph models cache their propagated embeddings for full ranking (``restore_user_e``,
``restore_item_e`` / ``restore_entity_e``, filled by ``full_sort_predict``, cleared by ``calculate_loss``)
and save them with a checkpoint when they list them in ``other_parameter_name``. KGIN and MCCLK do not, so
``Trainer.evaluate(load_best_model=True)`` loads the best epoch's weights and then ranks with the caches of
the *last* validation: the test scores the last epoch's model, not the best one. The fix:
``load_other_parameter`` first drops every ``restore_*`` cache, then sets what the checkpoint holds; a model
whose checkpoint holds no caches recomputes them from the weights just loaded.
"""
from recbole.model.abstract_recommender import AbstractRecommender

CACHE_PREFIX = "restore_"


def load_other_parameter(self, para):
    """RecBole's ``load_other_parameter``, after clearing the model's ``restore_*`` caches."""
    for name in [k for k, v in vars(self).items() if k.startswith(CACHE_PREFIX)]:
        setattr(self, name, None)
    for key, value in (para or {}).items():
        setattr(self, key, value)


load_other_parameter.recbole_mkg_fix = True


def apply():
    if not getattr(AbstractRecommender.load_other_parameter, "recbole_mkg_fix", False):
        AbstractRecommender.load_other_parameter = load_other_parameter
