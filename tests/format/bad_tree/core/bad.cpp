// A file laid out against .clang-format, for the format check to find.
int  badly_spaced( int x ){return x;}
