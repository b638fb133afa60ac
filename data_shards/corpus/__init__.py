"""The foundation corpus: a few hundred molecules, sampled off equilibrium with GFN2-xTB and labelled at several
levels of theory on nested subsets, computed on Ray in checksummed chunks that a rerun never recomputes."""
