"""Studies of many steps: the sweep file and its run, baselines (the soup as a center), star-domain BMA,
the star report and the demo. They call the solutions wing and hand their numbers to reports."""
