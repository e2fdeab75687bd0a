# Finds niftilib (niftiio + znz). Debian's own CMake config for it names a library path that
# does not exist, so this module looks for the files directly.
#
# Sets NIfTI_FOUND, NIfTI_INCLUDE_DIRS, NIfTI_LIBRARIES and the imported target NIfTI::niftiio.
# Hint: NIfTI_ROOT. Headers include each other without the `nifti/` prefix, so the include
# directory is the `nifti` folder itself.
find_path(NIfTI_INCLUDE_DIR nifti1_io.h PATH_SUFFIXES nifti HINTS ${NIfTI_ROOT} ENV NIfTI_ROOT)
find_library(NIfTI_niftiio_LIBRARY NAMES niftiio HINTS ${NIfTI_ROOT} ENV NIfTI_ROOT PATH_SUFFIXES lib)
find_library(NIfTI_znz_LIBRARY NAMES znz libznz.so.3 HINTS ${NIfTI_ROOT} ENV NIfTI_ROOT PATH_SUFFIXES lib)
find_package(ZLIB QUIET)

include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(NIfTI
  REQUIRED_VARS NIfTI_niftiio_LIBRARY NIfTI_znz_LIBRARY NIfTI_INCLUDE_DIR ZLIB_FOUND)

if(NIfTI_FOUND)
  set(NIfTI_INCLUDE_DIRS ${NIfTI_INCLUDE_DIR})
  set(NIfTI_LIBRARIES ${NIfTI_niftiio_LIBRARY} ${NIfTI_znz_LIBRARY} ZLIB::ZLIB m)
  if(NOT TARGET NIfTI::niftiio)
    add_library(NIfTI::znz UNKNOWN IMPORTED)
    set_target_properties(NIfTI::znz PROPERTIES IMPORTED_LOCATION ${NIfTI_znz_LIBRARY}
                          INTERFACE_LINK_LIBRARIES ZLIB::ZLIB)
    add_library(NIfTI::niftiio UNKNOWN IMPORTED)
    set_target_properties(NIfTI::niftiio PROPERTIES
      IMPORTED_LOCATION ${NIfTI_niftiio_LIBRARY}
      INTERFACE_INCLUDE_DIRECTORIES ${NIfTI_INCLUDE_DIR}
      INTERFACE_LINK_LIBRARIES "NIfTI::znz;m")
  endif()
endif()
mark_as_advanced(NIfTI_INCLUDE_DIR NIfTI_niftiio_LIBRARY NIfTI_znz_LIBRARY)
