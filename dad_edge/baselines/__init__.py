"""Classical image-level baselines beside DiffusionAD: Isolation Forest, One-Class SVM, COPOD on
downsampled pixels, as in the comparison of arXiv 2412.07539. `dad-edge baseline` fits one;
`dad-edge eval` scores it with the metric code every model gets (image metrics; no maps).

    features.py   frames -> standardised downsampled pixels (fit and score share it)
    base.py       the detector seam: fit, score, state as arrays
    iforest.py    Isolation Forest (scikit-learn fit, numpy scoring)
    ocsvm.py      One-Class SVM (scikit-learn fit, numpy scoring)
    copod.py      COPOD (numpy)
    methods.py    method name -> class
    artifact.py   baseline.safetensors: save, load, validate
    scorer.py     a baseline file behind the interface evaluation uses
    fit.py        fit on an MVTec-layout category and write the file

Scoring needs numpy, OpenCV and safetensors only; scikit-learn is imported to fit, never torch.
"""
