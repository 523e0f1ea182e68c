"""The bundled experiment configs (installed as ``atlasd.configs``), so that
``atlasd discover --config heat`` finds them from any folder. ``atlasd configs`` lists them."""
