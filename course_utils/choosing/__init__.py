"""Chapter 10: choosing, costing and documenting a model.

landscape (the dated model and price tables, and the article's model table checked against them),
costs (API against self-hosting: monthly bills, the break-even volume, tokens per dollar).
"""
