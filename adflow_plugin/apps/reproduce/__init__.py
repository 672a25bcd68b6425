"""The paper's claims in miniature: ``basicsr reproduce``.

Trains, on one folder of photographs and with one small shared encoder size, the L1 RRDB (the bottom
rung of the paper's Fig. 7 ladder), ESRGAN (from that L1 model, BasicSR's recipe), BaseFlow (NLL) and
AdFlow (NLL + GAN) at flow depths K = 1, 2, 4, all through ``basicsr train`` / ``basicsr test`` on
generated options files; then measures every model per image on another folder of photographs and
writes a Table-2-style ``table.md``, a Fig.-7-style plot, a side-by-side picture and the raw JSON.

Modules: :mod:`.presets` (sizes and budgets), :mod:`.data` (paired data from photo folders),
:mod:`.runs` (the options files of every stage), :mod:`.evaluate` (per-image metrics),
:mod:`.report` (table, plot, picture) and :mod:`.pipeline` (the stages in order, resumable).
"""
