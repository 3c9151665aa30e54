"""Knowledge-aware models of recbole-mkg (registered under these names)."""
from recbole_mkg.model.knowledge_aware_recommender.crossgmmi import CrossGMMI
from recbole_mkg.model.knowledge_aware_recommender.kgat import KGAT
from recbole_mkg.model.knowledge_aware_recommender.mkgat import MKGAT
from recbole_mkg.model.knowledge_aware_recommender.multikg4rec import MultiKG4Rec

__all__ = ["CrossGMMI", "KGAT", "MKGAT", "MultiKG4Rec"]
