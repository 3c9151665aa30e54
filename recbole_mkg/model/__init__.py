"""Models of recbole-mkg (``knowledge_aware_recommender``) and the layers they share (``layers``)."""
