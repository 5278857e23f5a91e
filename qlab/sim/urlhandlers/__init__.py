"""pyserial URL handlers of the simulators (``qlabsim://MODEL[/NAME][?axes=0,1]``)."""
