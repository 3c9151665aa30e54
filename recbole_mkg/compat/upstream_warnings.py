"""Silence the warnings that RecBole 1.2.1 and PyG raise on today's stack at every run.

They are the libraries' business, not the user's, and each names code the user cannot change:

* pandas 2.2+: ``A value is trying to be set on a copy of a DataFrame or Series through chained
  assignment using an inplace method`` from RecBole's ``Dataset._fill_nan`` (``fillna(inplace=True)`` on a
  column; the values are filled all the same under pandas 2, which ``requirements.txt`` pins);
* torch 2.4+: ```torch.cuda.amp.GradScaler(args...)` is deprecated`` from RecBole's ``Trainer.__init__``;
* torch 2.10+: ```torch.jit.script` is deprecated`` raised while ``torch_geometric`` is imported;
* torch: ``torch.sparse.SparseTensor(indices, values, [shape, ]*, device=) is deprecated`` from RecBole's
  graph models (LightGCN, NGCF, ...: ``torch.sparse.FloatTensor``), and SpectralCF's ``Creating a tensor
  from a list of numpy.ndarrays is extremely slow`` (once, when the model is built);
* numpy: ``divide by zero encountered in power`` from RecBole's KGIN, whose degree normalisation raises an
  isolated node's degree 0 to -0.5 and then sets the resulting ``inf`` to 0 itself.

Each filter matches the message *and* the module that emits it, so the same warning from anywhere else
(the user's own code, another library) still shows.
"""
import warnings

#: (message regex, category, module regex of where the warning is attributed)
FILTERS = (
    (r"A value is trying to be set on a copy of a DataFrame or Series through chained assignment",
     FutureWarning, r"recbole\.data\.dataset\.dataset"),
    (r"`torch\.cuda\.amp\.GradScaler\(args\.\.\.\)` is deprecated", FutureWarning, r"recbole\.trainer\.trainer"),
    (r"`torch\.jit\.script` is deprecated", FutureWarning, r"torch\.jit\._script"),
    (r"torch\.sparse\.SparseTensor\(indices, values, (shape, )?\*, device=\) is deprecated", UserWarning,
     r"recbole\.model\."),
    (r"Creating a tensor from a list of numpy\.ndarrays is extremely slow", UserWarning,
     r"recbole\.model\.general_recommender\.spectralcf"),
    (r"divide by zero encountered in power", RuntimeWarning, r"recbole\.model\.knowledge_aware_recommender\.kgin"),
)


def apply():
    for message, category, module in FILTERS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
