# Finds libdeflate (whole-buffer DEFLATE, zlib and gzip streams; Debian's libdeflate-dev).
#
# Sets Libdeflate_FOUND and the imported target Libdeflate::Libdeflate. Hint: Libdeflate_ROOT.
find_path(Libdeflate_INCLUDE_DIR libdeflate.h HINTS ${Libdeflate_ROOT} ENV Libdeflate_ROOT PATH_SUFFIXES include)
find_library(Libdeflate_LIBRARY NAMES deflate HINTS ${Libdeflate_ROOT} ENV Libdeflate_ROOT PATH_SUFFIXES lib)

include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(Libdeflate REQUIRED_VARS Libdeflate_LIBRARY Libdeflate_INCLUDE_DIR)

if(Libdeflate_FOUND AND NOT TARGET Libdeflate::Libdeflate)
  add_library(Libdeflate::Libdeflate UNKNOWN IMPORTED)
  set_target_properties(Libdeflate::Libdeflate PROPERTIES IMPORTED_LOCATION ${Libdeflate_LIBRARY}
                        INTERFACE_INCLUDE_DIRECTORIES ${Libdeflate_INCLUDE_DIR})
endif()
mark_as_advanced(Libdeflate_INCLUDE_DIR Libdeflate_LIBRARY)
