"""The roles of a distributed run (collector, learner, replay) and the one contract they implement."""
