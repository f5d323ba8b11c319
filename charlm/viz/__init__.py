"""Seeing inside a trained model (`charlm viz`), after Karpathy, Johnson and Fei-Fei,
"Visualizing and Understanding Recurrent Networks" (2015).

`activations` runs the model over a text and keeps what its own forward pass computed (every
layer's states, the gates' saturation, the next-character predictions); `features` finds the
units that track simple features of the text; `page` writes it all into one self-contained
HTML page (`page.html`, `page.css`, `page.js` inlined).
"""
