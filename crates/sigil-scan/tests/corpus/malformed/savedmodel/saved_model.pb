.
"serve#

n0Const

n1	WriteFile"