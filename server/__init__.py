"""layerscope's server side: the index engine and (later) graph, runtime, analysis and API."""
