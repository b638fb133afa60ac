"""Demo corpus generator: real small molecules labelled at four levels of theory (xTB, DFT, MP2, CCSD(T)).

`python -m polyfid.data_shards.demo.generate --out data_shards/demo_corpus --scale full` regenerates the
committed corpus.
"""
