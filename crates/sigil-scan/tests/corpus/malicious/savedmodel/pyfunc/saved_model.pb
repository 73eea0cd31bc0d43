0
"serve%

n0Const

n1EagerPyFunc"´