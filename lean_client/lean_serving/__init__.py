"""TensorFlow Serving's Predict messages, compiled from the two .proto files beside this one."""
