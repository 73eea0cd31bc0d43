A
"serve6

n0Placeholder

n1MatMul

n2Identity"´