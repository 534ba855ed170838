"""Data tooling around datasets: evaluation-index files (:mod:`scenetok.data.index`), preview
contact sheets (:mod:`scenetok.data.preview`) and capture conversion to RE10K-style chunks
(:mod:`scenetok.data.convert`). Nothing heavy is imported here; import the submodules directly."""
