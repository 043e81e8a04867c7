"""The DRP's primitives, one module each; importing a module registers its primitive."""
