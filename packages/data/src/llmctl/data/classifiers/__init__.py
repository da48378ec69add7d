"""Model-based data quality and domains: train a classifier, score a corpus with it on the executor.

`train.train_classifier` turns labelled rows (or sources labelled as a whole) into a classifier directory;
`stage.run_classify` adds its columns to every row of a corpus as a stage on the one executor; `meta` is the
interface every backend (`fasttext_backend`, `bert_backend`) implements and the metadata they share.
"""
