# `cmake --install` puts headers, libraries and a CMake package in the prefix, so that
# another project can `find_package(kdseg)` and link kdseg::core.
include(CMakePackageConfigHelpers)

install(TARGETS kdseg_core kdseg_torch EXPORT kdsegTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
        RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(TARGETS kdseg RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(DIRECTORY core DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/kdseg
        FILES_MATCHING PATTERN "*.h" PATTERN "pch.h" EXCLUDE)
install(FILES ${CMAKE_BINARY_DIR}/generated/core/build_config.h
        DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/kdseg/core)
install(EXPORT kdsegTargets NAMESPACE kdseg:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/kdseg)

configure_package_config_file(cmake/kdsegConfig.cmake.in
  ${CMAKE_BINARY_DIR}/kdsegConfig.cmake
  INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/kdseg)
write_basic_package_version_file(${CMAKE_BINARY_DIR}/kdsegConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_BINARY_DIR}/kdsegConfig.cmake ${CMAKE_BINARY_DIR}/kdsegConfigVersion.cmake
        DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/kdseg)
